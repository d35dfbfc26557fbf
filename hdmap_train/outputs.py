"""What one run leaves for people: metrics.json and predictions.csv (written atomically), the pictures under
plots/, TensorBoard scalars, images and hparams, the end-of-run results table and its summary line.

Light: nothing here imports torch, Lightning or anomalib (a helper process draws sweep jobs' pictures with it).
"""

import io
import json
import logging
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import google_crc32c
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from rich import box
from rich.console import Console
from rich.table import Table
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer import record_writer
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from hdmap_train.domains import SEPARATOR, evaluated_results
from hdmap_train.evaluation import Example
from hdmap_train.plots import example_grid_image, histogram_figure, roc_figure, save_picture

if TYPE_CHECKING:  # Lightning is imported only once a run trains
    from lightning.pytorch.loggers import TensorBoardLogger

log = logging.getLogger(__name__)
PACKAGES = ("hdmap_train", "anomalib", "torch", "torchvision", "lightning", "hydra-core", "timm", "numpy")


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that decide a result."""
    return {"python": platform.python_version(), **{name: version(name) for name in PACKAGES}}


def write_atomic(path: Path, write: Callable[[TextIO], None]) -> None:
    """Call `write` on a temporary file next to `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a result file is as readable as any other
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict) -> None:
    """metrics.json and other records, written atomically."""
    write_atomic(path, lambda handle: json.dump(data, handle, indent=2, default=str))


def write_csv_atomic(path: Path, frame: pd.DataFrame) -> None:
    """predictions.csv and other tables, written atomically (no index column)."""
    write_atomic(path, lambda handle: frame.to_csv(handle, index=False))


# (header, metric key) of the results table: fractions with 3 decimals, 80 columns wide in all.
TABLE_COLUMNS = (
    ("AUROC", "image_AUROC"), ("AUPR", "image_AUPR"), ("F1", "image_F1Score"), ("prec", "image_precision"),
    ("rec", "image_recall"), ("acc", "image_accuracy"), ("FPR", "image_FPR"), ("oF1", "oracle_F1Score"),
    ("TPR@1", "TPR_at_FPR_1pct"), ("TPR@5", "TPR_at_FPR_5pct"),
)


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def summary_line(record: dict) -> str:
    """Model | source AUROC | avg target AUROC | transfer ratio | status (and error line) | fit time | run dir, on one
    line; the fit time only when the record has it.
    """
    source = record.get("source_results") or {}
    status = record["status"]
    if record.get("error"):
        status += f" ({str(record['error']).strip().splitlines()[0][:160]})"
    fit = (record.get("training_info") or {}).get("fit_seconds")
    return (
        f"{record['condition']['model']} | source {record['source_domain']} AUROC {_number(source.get('image_AUROC'))}"
        f" | avg target AUROC {_number(record.get('avg_target_auroc'))}"
        f" | transfer ratio {_number(record.get('transfer_ratio'))} | {status}"
        + ("" if fit is None else f" | fit {fit:.1f} s") + f" | {record['experiment_path']}"
    )


def log_to_files(text: str) -> None:
    """Write text as one INFO record to the root logger's file handlers only (train.log), not to the terminal."""
    entry = log.makeRecord(log.name, logging.INFO, __file__, 0, "%s", (text,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and entry.levelno >= handler.level:
            handler.handle(entry)


def print_results(record: dict) -> None:
    """Rich table (source row first and bold, each domain followed by its subgroups), then the summary line; the
    same as plain text into train.log.
    """
    table = results_table(record)
    lines = [f"results: {record['experiment_path']}/{{metrics.json,predictions.csv,plots/}}", summary_line(record)]
    console = Console()
    console.print(table)
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    plain = Console(file=io.StringIO(), width=100, color_system=None)
    plain.print(table)
    log_to_files("Results:\n" + plain.file.getvalue() + "\n".join(lines))


def results_table(record: dict) -> Table:
    """The results table: domains (and their subgroups) x TABLE_COLUMNS, with the validation threshold; several
    sources: their test sets together first ('pooled'), then each domain.
    """
    threshold = record["validation"]["threshold"]
    table = Table(
        title=f"{record['condition']['name']}: trained on {record['source_domain']}",
        caption=f"F1 prec rec acc FPR: at the validation threshold {threshold:.4g}, the same for every domain. "
        "oF1: F1 at the best threshold per domain (chosen with test labels: reference only). "
        "TPR@1/@5: TPR at FPR 1%/5%. n: normal/fault images."
        + (" pooled: the source domains' test sets together." if "source_domain_results" in record else ""),
        box=box.SIMPLE_HEAD, padding=(0, 0), pad_edge=False,
    )
    table.add_column("domain", no_wrap=True)
    for column, _ in TABLE_COLUMNS:
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    for index, result in enumerate(evaluated_results(record)):
        name = "pooled" if SEPARATOR in result["domain"] else result["domain"]
        rows = [(name, result, "bold" if index == 0 else None)]
        rows += [(f" {name}", sub, "dim") for name, sub in result.get("subgroups", {}).items()]
        for name, metrics, style in rows:
            cells = [_cell(metrics.get(key)) for _, key in TABLE_COLUMNS]
            table.add_row(name, *cells, f"{metrics['n_normal']}/{metrics['n_fault']}", style=style)
    return table


def data_line(data: dict) -> str:
    """The data summary of a run (datamodule.summary()) on one line, for train.log."""
    tests = ", ".join(f"{domain} {n}" for domain, n in data["test_samples"].items())
    validation = data["validation"]
    native = ", ".join("x".join(map(str, size)) for size in data["native_sizes"])
    normalization = data["normalization"]
    applied = normalization["applied"].get(next(iter(data["test_samples"])), {})
    numbers = f" shift {applied['shift']:.4g} scale {applied['scale']:.4g} on the source" if "scale" in applied else ""
    cache = data["cache"]
    kinds = sorted({cache["train"], cache["val"], *cache["test"].values()})
    manifest = data["manifest"]
    by_source = "".join(f" | {domain}: train {data['train_samples_by_source'][domain]}, validation "
                        f"{data['val_samples_by_source'][domain]}" for domain in data.get("sources", []))
    return (
        f"Data {data['root']}: train {data['train_samples']} ({data['train_images_per_epoch']} per epoch), validation "
        f"{data['val_samples']} ({validation['normal']} normal, {validation['fault']} fault; {validation['mode']}), "
        f"test {tests} | native {native} -> {'x'.join(map(str, data['image_size']))} ({data['resize']}, "
        f"{data['channels']} channel(s)) | normalisation {normalization['mode']} (stats {normalization['stats']}){numbers}"
        f" | cache {'/'.join(kinds)}{' on ' + cache['device'] if 'device' in cache else ''} (limit {cache['limit_mb']} MB)"
        f"{', pinned batches' if data.get('pin_memory') else ''} | manifest "
        + (f"sha256 {manifest['sha256'][:12]}" if manifest else "none (mapping not verified)") + by_source
    )


NOT_SCALARS = ("domain", "threshold", "n_samples", "n_normal", "n_fault", "subgroups")


def write_plots(
    plots_dir: Path, predictions: pd.DataFrame, threshold: float, sources: list[str],
    examples: dict[str, dict[str, list[Example]]], n_examples: int,
) -> dict[str, Path]:
    """roc.png, score_histograms.png and anomaly_maps_<domain>.png; returns {name: path}. sources: the source domains."""
    pictures = {
        "roc": save_picture(roc_figure(predictions, threshold, sources), plots_dir / "roc.png"),
        "score_histograms": save_picture(histogram_figure(predictions, threshold, sources), plots_dir / "score_histograms.png"),
    }
    for domain, kept in examples.items():
        grid = example_grid_image(domain, kept, n_examples)
        pictures[f"anomaly_maps_{domain}"] = save_picture(grid, plots_dir / f"anomaly_maps_{domain}.png")
    return pictures


def metric_scalars(record: dict) -> dict[str, float]:
    """test/<domain>/<metric> (and test/<domain>/<subgroup>/<metric>), avg and harmonic-mean AUROCs, transfer ratio,
    threshold.
    """
    scalars: dict[str, float] = {}
    for result in evaluated_results(record):
        groups = {"": result, **{f"{name}/": sub for name, sub in result.get("subgroups", {}).items()}}
        for prefix, metrics in groups.items():
            scalars.update({
                f"test/{result['domain']}/{prefix}{key}": value
                for key, value in metrics.items() if key not in NOT_SCALARS and value is not None
            })
    extra = {key: record.get(key) for key in ("avg_target_auroc", "hmean_target_auroc", "hmean_auroc", "transfer_ratio")}
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


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C of a TensorBoard event record (TFRecord framing), computed in C by google-crc32c."""
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def checksum_tensorboard_records_in_c() -> None:
    """TensorBoard's event writer checksums every record with a pure-Python CRC-32C (about 0.2 s per MB: a run's
    pictures cost it 0.3 s); give it the same checksum from C.
    """
    record_writer.masked_crc32c = masked_crc32c


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
    checksum_tensorboard_records_in_c()
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
