"""Export parity: the exported model scores the run's own test images as its checkpoint does, or the export fails.

Every test image of every domain the run evaluated goes through hdmap_train's datamodule exactly as evaluation
feeds it (the run's config, resizing, normalisation, channels), batch by batch, into the checkpoint model (torch,
CPU, anomalib's own code) and into the exported file through its runtime (ONNX Runtime, OpenVINO, or model.pt).
The result is export.json's `parity` block; a difference beyond the tolerance is one HdmapError line.
"""

import math
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path

import numpy as np

from hdmap_train.errors import HdmapError
from hdmap_train.results import RunRecord

TOLERANCE = 1e-4  # relative: the largest |exported - checkpoint| allowed, as a fraction of the checkpoint scores' range
FLOOR = 1e-6  # absolute tolerance when every checkpoint score is the same (range 0)


def check_tolerance(tolerance) -> float:
    """The relative tolerance as a float; HdmapError unless it is a finite number >= 0."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not 0 <= tolerance < math.inf:
        raise HdmapError(f"tolerance={tolerance} must be a number >= 0: the largest score difference allowed, as a "
                         f"fraction of the checkpoint scores' range (default {TOLERANCE:g}).")
    return float(tolerance)


def exported_scorer(fmt: str, path: Path) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """(scores of a float32 N x C x H x W batch through the exported file, the runtime's name)."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(["pred_score"], {"input": x})[0], f"onnxruntime {version('onnxruntime')} (CPU)"
    if fmt == "openvino":
        import openvino

        compiled = openvino.Core().compile_model(str(path), "CPU")
        return lambda x: compiled(x)["pred_score"], f"openvino {version('openvino')} (CPU)"
    import torch

    model = torch.load(path, weights_only=False)["model"].eval()  # the file this export just wrote

    def torch_scores(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).pred_score.numpy()

    return torch_scores, f"torch {torch.__version__} (CPU, model.pt)"


def evaluation_batches(record: RunRecord) -> Iterator[tuple[str, object]]:
    """(domain, batch) of every test set the run evaluated, source first, as the model takes them in evaluation."""
    import lightning as L
    from omegaconf import OmegaConf

    from hdmap_train.data.datamodule import build_datamodule

    cfg = OmegaConf.create({key: value for key, value in record["condition"]["config"].items() if key != "hydra"})
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg.data, cfg.domain, cfg.seed)
    datamodule.setup()
    for domain, loader in datamodule.test_dataloaders().items():
        for batch in loader:
            yield domain, datamodule.on_after_batch_transfer(batch, 0)


def measure_parity(record: RunRecord, model, exported: Callable[[np.ndarray], np.ndarray]) -> dict:
    """Both models' scores of every test image: {domain, path, label, checkpoint, exported} arrays."""
    import torch

    columns: dict[str, list] = {"domain": [], "path": [], "label": [], "checkpoint": [], "exported": []}
    for domain, batch in evaluation_batches(record):
        images = batch.image.float().cpu().contiguous()
        with torch.no_grad():
            columns["checkpoint"].append(model(images).pred_score.reshape(-1).double().numpy())
        columns["exported"].append(np.asarray(exported(images.numpy()), dtype=np.float64).reshape(-1))
        columns["domain"] += [domain] * len(images)
        columns["path"] += [str(p) for p in batch.image_path]
        columns["label"].append(batch.gt_label.reshape(-1).int().cpu().numpy())
    return {key: np.concatenate(value) if key in ("label", "checkpoint", "exported") else np.asarray(value)
            for key, value in columns.items()}


def parity_block(scores: dict, threshold: float, tolerance: float, runtime: str) -> dict:
    """export.json's `parity` from measure_parity's scores; HdmapError (one line) beyond the tolerance."""
    from hdmap_train.metrics import image_metrics

    ours, theirs = scores["checkpoint"], scores["exported"]
    delta = np.where(np.isfinite(theirs), np.abs(theirs - ours), np.inf)
    worst = int(np.argmax(delta))
    low, high = float(ours.min()), float(ours.max())
    allowed = tolerance * (high - low) if high > low else FLOOR
    basis = f"{tolerance:g} x the score range {high - low:.6g}" if high > low else f"the floor: every checkpoint score is {low:.6g}"
    if not delta[worst] <= allowed:
        raise HdmapError(f"Export parity failed: the exported model ({runtime}) scores {scores['path'][worst]} "
                         f"{theirs[worst]:.9g}, the checkpoint {ours[worst]:.9g} (|difference| {delta[worst]:.3g} > "
                         f"tolerance {allowed:.3g} = {basis}); nothing was written: "
                         "export format=torch instead, or pass a larger tolerance= if that difference is acceptable.")
    auroc = {}
    for domain in dict.fromkeys(scores["domain"]):
        rows, labels = scores["domain"] == domain, scores["label"][scores["domain"] == domain]
        pair = [image_metrics(labels, s[rows], threshold)["image_AUROC"] for s in (theirs, ours)]
        auroc[str(domain)] = None if None in pair else pair[0] - pair[1]
    return {
        "passed": True,
        "runtime": runtime,
        "images": int(ours.size),
        "max_abs_difference": float(delta[worst]),
        "max_difference_image": str(scores["path"][worst]),
        "score_range": [low, high],
        "tolerance": allowed,
        "tolerance_relative": tolerance,
        "delta_auroc": auroc,
        "threshold": threshold,
        "decision_agreement": float(np.mean((theirs > threshold) == (ours > threshold))),
    }
