"""What a run leaves in TensorBoard: per-domain scalars, the HParams tab, and the pictures as images.

Light: nothing here imports torch, Lightning or anomalib (a helper process draws sweep jobs' pictures with it).
"""

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from hdmap_train.domains import evaluated_results
from hdmap_train.metrics import Example
from hdmap_train.results import SHIFT_METRICS, TENSORBOARD, keys
from hdmap_train.run_plots import write_plots

if TYPE_CHECKING:  # Lightning is imported only once a run trains
    from lightning.pytorch.loggers import TensorBoardLogger


def metric_scalars(record: dict) -> dict[str, float]:
    """test/<domain>/<metric> (and test/<domain>/<subgroup>/<metric>) of the TENSORBOARD metrics, the run's
    domain-shift numbers (avg and harmonic-mean AUROCs, transfer ratio), the threshold.
    """
    scalars: dict[str, float] = {}
    for result in evaluated_results(record):
        groups = {"": result, **{f"{name}/": sub for name, sub in result.get("subgroups", {}).items()}}
        for prefix, metrics in groups.items():
            scalars.update({
                f"test/{result['domain']}/{prefix}{key}": metrics[key]
                for key in keys(TENSORBOARD) if metrics.get(key) is not None
            })
    extra = {key: record.get(key) for key in keys(TENSORBOARD, SHIFT_METRICS)}
    extra["threshold"] = record["validation"]["threshold"]
    scalars.update({f"test/{key}": value for key, value in extra.items() if value is not None})
    return scalars

def run_hparams(cfg: DictConfig) -> dict:
    """The settings that tell runs apart in TensorBoard's HParams tab (Lightning flattens them to model/..., data/...)."""
    keep = ("model", "domain", "evaluation")
    data = cfg.data
    normalization = {"mode": data.normalization.mode, "stats": data.normalization.stats}
    if data.normalization.mode == "minmax_fixed":
        normalization["bounds"] = OmegaConf.to_container(data.normalization.bounds, resolve=True)
    return {
        "name": cfg.name,
        "seed": cfg.seed,
        **{key: OmegaConf.to_container(cfg[key], resolve=True) for key in keep},
        "data": {
            "root": "synthetic" if data.synthetic is not None else str(data.root),
            "image_size": list(data.image_size), "val_fraction": data.val_fraction, "resize": data.resize,
            "channels": data.channels, "normalization": normalization, "validation": data.validation,
        },
    }

# HParams-tab metrics besides hp_metric (= avg target AUROC, Lightning's default column): metrics.json key -> tag.
HPARAM_METRICS = {"source_auroc": "hparams/source_auroc", "avg_target_auroc": "hparams/avg_target_auroc",
                  "transfer_ratio": "hparams/transfer_ratio"}

def png_summary(tag: str, path: Path) -> Summary:
    """An image summary holding the PNG file's bytes as they are (SummaryWriter.add_image would decode and re-encode)."""
    with Image.open(path) as image:  # reads the header only
        (width, height), channels = image.size, len(image.getbands())
    picture = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=path.read_bytes())
    return Summary(value=[Summary.Value(tag=tag, image=picture)])

def write_pictures(
    plots_dir: Path, tensorboard_dir: Path, step: int, predictions: pd.DataFrame, threshold: float, sources: list[str],
    examples: dict[str, dict[str, list[Example]]], n_examples: int,
) -> dict[str, Path]:
    """write_plots, then each picture as a TensorBoard image `plots/<name>` at `step`, in an event file of its own
    (*.pictures) in tensorboard_dir; returns {name: path}. Needs neither torch nor the run's logger, so that a helper
    process can draw a sweep job's pictures (hdmap_train.background_pictures).
    """
    pictures = write_plots(plots_dir, predictions, threshold, sources, examples, n_examples)
    writer = EventFileWriter(str(tensorboard_dir), filename_suffix=".pictures")
    for name, path in pictures.items():
        writer.add_event(Event(wall_time=time.time(), step=step, summary=png_summary(f"plots/{name}", path)))
    writer.close()
    return pictures

def log_to_tensorboard(logger: "TensorBoardLogger", record: dict, hparams: dict, step: int) -> None:
    """Per-domain scalars and hparams (plus the dataset's manifest sha256 from the record) with the HParams metrics
    hp_metric = avg target AUROC and HPARAM_METRICS (NaN where undefined); write_pictures adds the pictures.
    """
    logger.log_metrics(metric_scalars(record), step)
    manifest = (record.get("data") or {}).get("manifest") or {}
    hparams = {**hparams, "data": {**hparams.get("data", {}), "manifest_sha256": manifest.get("sha256", "none")}}
    values = {"source_auroc": record["source_results"]["image_AUROC"], **record}
    metrics = {tag: values.get(key) for key, tag in HPARAM_METRICS.items()}
    metrics["hp_metric"] = record["avg_target_auroc"]
    logger.log_hyperparams(hparams, metrics={tag: math.nan if value is None else value for tag, value in metrics.items()})
    (Path(logger.log_dir) / "hparams.yaml").unlink(missing_ok=True)  # written at fit start; rewritten with these
    logger.finalize("success")  # flush and close the event file, save hparams.yaml
