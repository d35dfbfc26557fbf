"""`python -m hdmap_train.export`: the exported model scores the run's test images as its checkpoint did (torch, ONNX),
export.json carries the threshold, input contract and parity check, the run is left as it was; a parity failure
writes nothing; error and usage lines."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from hdmap_train import export_parity
from hdmap_train.data.datamodule import build_datamodule
from hdmap_train.export import main
from hdmap_train.export_patches import export_friendly
from hdmap_train.train import run
from helpers.runs import tiny_run_cfg


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    run(tiny_run_cfg("draem", tiny_dataset, run_dir, "evaluation.plots=false"), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def tiny_patchcore_run(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("patchcore_run")
    run(tiny_run_cfg("patchcore", tiny_dataset, run_dir, "weights=random", "evaluation.plots=false"), run_dir)
    return run_dir


def assert_parity(info: dict, record: dict, runtime: str) -> None:
    """export.json's parity block: every test image, within the tolerance, the same AUROC and decisions."""
    parity = info["parity"]
    low, high = parity["score_range"]
    assert parity["passed"] and parity["runtime"].startswith(runtime) and parity["images"] == 96
    assert parity["tolerance_relative"] == 1e-4 and parity["tolerance"] == pytest.approx(1e-4 * (high - low))
    assert 0 <= parity["max_abs_difference"] <= parity["tolerance"] and Path(parity["max_difference_image"]).is_file()
    assert list(parity["delta_auroc"]) == ["domain_A", "domain_B", "domain_C", "domain_D"]
    assert all(abs(delta) < 1e-9 for delta in parity["delta_auroc"].values())
    assert parity["decision_agreement"] == 1.0 and parity["threshold"] == record["validation"]["threshold"]


def run_test_images(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every test image of the run as its datamodule fed it (N x C x H x W), and the checkpoint's scores of them."""
    cfg = OmegaConf.create(json.loads((run_dir / "metrics.json").read_text())["condition"]["config"])
    datamodule = build_datamodule(cfg.data, cfg.domain, cfg.seed)
    datamodule.setup()
    batches = [datamodule.on_after_batch_transfer(batch, 0) for loader in datamodule.test_dataloaders().values() for batch in loader]
    paths = [str(p) for batch in batches for p in batch.image_path]
    scores = pd.read_csv(run_dir / "predictions.csv").set_index("image_path").loc[paths, "anomaly_score"].to_numpy()
    return torch.cat([batch.image for batch in batches]).numpy(), scores


def run_files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and "export" not in p.parts}


@pytest.mark.slow
def test_torch_export_scores_like_the_checkpoint(tiny_run: Path, capsys: pytest.CaptureFixture) -> None:
    before = run_files(tiny_run)
    assert main([f"run={tiny_run}", "format=torch"]) == 0
    out = tiny_run / "export" / "torch"
    assert str(out / "model.pt") in capsys.readouterr().out
    assert run_files(tiny_run) == before, "the run's own files are never changed"
    info = json.loads((out / "export.json").read_text())
    record = json.loads((tiny_run / "metrics.json").read_text())
    assert info["threshold"] == record["validation"]["threshold"] and info["threshold_quantile"] == 0.99
    assert info["input"]["shape"] == ["batch", 3, 32, 96] and info["input"]["pre_processing_in_model"] == "none"
    assert info["data_normalization"] == record["data"]["normalization"] and info["source_run"] == str(tiny_run.resolve())
    assert "fault if pred_score > threshold" in info["score"]["meaning"]
    assert_parity(info, record, "torch")
    assert info["parity"]["max_abs_difference"] == 0.0  # the same torch model, pickled

    images, expected = run_test_images(tiny_run)
    model = torch.load(out / "model.pt", weights_only=False)["model"].eval()
    with torch.no_grad():
        scores = model(torch.from_numpy(images)).pred_score.numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-4)


@pytest.mark.slow
def test_onnx_export_scores_like_the_checkpoint(tiny_run: Path, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    assert main([f"run={tiny_run}", "format=onnx", f"out={tmp_path}"]) == 0
    info = json.loads((tmp_path / "export.json").read_text())
    assert info["files"] == ["model.onnx", "model.onnx.data"] and not list(tmp_path.glob(".export-*"))
    assert_parity(info, json.loads((tiny_run / "metrics.json").read_text()), "onnxruntime")
    graph = onnx.load(str(tmp_path / "model.onnx"))
    [image] = graph.graph.input
    assert [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim] == ["batch_size", 3, 32, 96]
    assert graph.graph.output[0].name == "pred_score"
    images, expected = run_test_images(tiny_run)
    [scores] = ReferenceEvaluator(graph).run(["pred_score"], {"input": images})
    np.testing.assert_allclose(scores, expected, rtol=1e-4)


@pytest.mark.slow
def test_patchcore_onnx_export_passes_parity(tiny_patchcore_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    assert main([f"run={tiny_patchcore_run}", "format=onnx", f"out={tmp_path}"]) == 0
    info = json.loads((tmp_path / "export.json").read_text())
    assert_parity(info, json.loads((tiny_patchcore_run / "metrics.json").read_text()), "onnxruntime")
    assert info["parity"]["score_range"][1] > info["parity"]["score_range"][0]  # scores spread: a real tolerance


def test_patchcore_search_is_anomalibs_outside_the_export_and_the_same_inside() -> None:
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    model = PatchcoreModel(layers=["layer1"], backbone="resnet18", pre_trained=False)
    generator = torch.Generator().manual_seed(0)
    model.memory_bank = torch.randn(300, 16, generator=generator)
    embedding = torch.randn(2500, 16, generator=generator)  # over 1024 patches: anomalib's chunked branch
    expected = [model.nearest_neighbors(embedding, n) for n in (1, 3)]
    with export_friendly(model):
        assert "nearest_neighbors" in vars(model)
        found = [model.nearest_neighbors(embedding, n) for n in (1, 3)]
    assert "nearest_neighbors" not in vars(model)  # the checkpoint model keeps anomalib's search
    for (distances, indices), (want_distances, want_indices) in zip(found, expected, strict=True):
        torch.testing.assert_close(distances, want_distances)
        assert torch.equal(indices, want_indices)


@pytest.mark.slow
def test_a_parity_failure_is_one_line_and_writes_nothing(tiny_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("onnxruntime")
    kept = tmp_path / "kept"
    assert main([f"run={tiny_run}", "format=onnx", f"out={kept}"]) == 0
    before = {p.name: p.read_bytes() for p in kept.iterdir()}
    real = export_parity.exported_scorer

    def misnormalised(fmt, path):  # the exported model fed a wrongly normalised image (x 1.05)
        scorer, runtime = real(fmt, path)
        return (lambda x: scorer(x * 1.05)), runtime

    monkeypatch.setattr(export_parity, "exported_scorer", misnormalised)
    capsys.readouterr()
    for out in (kept, tmp_path / "new" / "onnx"):
        assert main([f"run={tiny_run}", "format=onnx", f"out={out}"]) == 1
        error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(error) == 1 and error[0].startswith("error: Export parity failed: the exported model (onnxruntime")
        assert "/test/" in error[0] and ", the checkpoint " in error[0] and "x the score range" in error[0]
        assert "nothing was written" in error[0]
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before, "the earlier export is left as it was"
    assert not (tmp_path / "new").exists(), "a failed export leaves no folder of its own"


@pytest.mark.slow
def test_openvino_export_scores_like_the_checkpoint(tiny_run: Path, tmp_path: Path) -> None:
    openvino = pytest.importorskip("openvino")  # not pinned (large): runs where it is installed

    assert main([f"run={tiny_run}", "format=openvino", f"out={tmp_path}"]) == 0
    info = json.loads((tmp_path / "export.json").read_text())
    assert info["model_file"] == "model.xml" and "model.bin" in info["files"]
    images, expected = run_test_images(tiny_run)
    scores = openvino.Core().compile_model(str(tmp_path / "model.xml"), "CPU")(images)["pred_score"]
    np.testing.assert_allclose(np.asarray(scores).reshape(-1), expected, rtol=1e-4)


def fake_run(run_dir: Path, status: str = "success", channels: int = 3, checkpoint: bool = True) -> Path:
    """A run directory with a minimal metrics.json (and an empty best.ckpt): enough for the checks before loading."""
    (run_dir / "checkpoints").mkdir(parents=True)
    if checkpoint:
        (run_dir / "checkpoints" / "best.ckpt").touch()
    record = {"status": status, "condition": {}, "best_checkpoint": str(run_dir / "checkpoints" / "best.ckpt"),
              "data": {"channels": channels}}
    (run_dir / "metrics.json").write_text(json.dumps(record))
    return run_dir


@pytest.mark.parametrize(("args", "rc", "message"), [
    ([], 2, "run= and format= are required"),
    (["run=x"], 2, "format= is required"),
    (["run=x", "format=torch", "colour=red"], 2, "colour= is not an argument of export: it takes run=, format=, out=, tolerance="),
    (["x"], 2, "x: export takes key=value arguments, e.g. python -m hdmap_train.export run="),
    (["run=x", "--format", "onnx"], 2, "--format: export takes key=value arguments: python -m hdmap_train.export run=x format=onnx"),
    (["run=x", "format=torch", "tolerance=abc"], 2, "tolerance=abc must be a number"),
    (["run={tmp}/ok", "format=torch", "tolerance=-1"], 1, "tolerance=-1 must be a number >= 0"),
    (["run={tmp}/ok", "format=torch", "tolerance=true"], 2, "tolerance=true must be a number"),
    (["run={tmp}/ok", "format=torch", "tolerance=1"], 1, "best.ckpt (the run's best checkpoint) is truncated"),  # 1: a number
    (["run={tmp}", "format=tflite"], 1, "format=tflite is not an export format: use one of torch, onnx, openvino."),
    (["run={tmp}", "format=torch"], 1, "metrics.json cannot be read"),
    (["run={tmp}/failed", "format=torch"], 1, "is not a finished run (status failed)"),
    (["run={tmp}/no_ckpt", "format=torch"], 1, "best.ckpt of {tmp}/no_ckpt is missing (also under {tmp}/no_ckpt/checkpoints); nothing to export."),
    (["run={tmp}/grey", "format=onnx"], 1, "data.channels=1; anomalib's onnx export traces a 3-channel input, so only format=torch"),
    (["run={tmp}/ok", "format=torch"], 1, "best.ckpt (the run's best checkpoint) is truncated or corrupt (File is not a zip file)"),
    (["run={tmp}/ok", "format=openvino"], 1, "format=openvino needs the package(s) openvino, not installed: pip install -e '.[export]' openvino."),
])
def test_errors_are_one_line(args, rc, message, tmp_path: Path, monkeypatch, capsys) -> None:
    fake_run(tmp_path / "failed", status="failed")
    fake_run(tmp_path / "no_ckpt", checkpoint=False)
    fake_run(tmp_path / "grey", channels=1)
    fake_run(tmp_path / "ok")
    monkeypatch.setitem(sys.modules, "openvino", None)  # not importable, installed or not
    monkeypatch.setitem(sys.modules, "onnx", sys.modules.get("onnx", object()))  # the channel check comes first
    for package in ("onnxscript", "onnxruntime"):
        monkeypatch.setitem(sys.modules, package, sys.modules.get(package, object()))
    assert main([a.format(tmp=tmp_path) for a in args]) == rc
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("error: ") and message.format(tmp=tmp_path) in error[-1]
    assert len(error) == (2 if rc == 2 else 1)  # usage errors repeat the usage line first
