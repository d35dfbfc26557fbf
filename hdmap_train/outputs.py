"""What one run leaves for people: metrics.json and predictions.csv (written atomically), the pictures under
plots/, TensorBoard scalars, images and hparams, the end-of-run results table and its summary line.
"""

import json
import math
import os
import platform
import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from rich import box
from rich.console import Console
from rich.table import Table

from hdmap_train.evaluation import Example
from hdmap_train.plots import example_grid_figure, histogram_figure, roc_figure, save_figure

if TYPE_CHECKING:  # Lightning is imported only once a run trains
    from lightning.pytorch.loggers import TensorBoardLogger

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
    """Model | source AUROC | avg target AUROC | transfer ratio | status | run dir, on one line."""
    source = record.get("source_results") or {}
    return (
        f"{record['condition']['model']} | source {record['source_domain']} AUROC {_number(source.get('image_AUROC'))}"
        f" | avg target AUROC {_number(record.get('avg_target_auroc'))}"
        f" | transfer ratio {_number(record.get('transfer_ratio'))} | {record['status']} | {record['experiment_path']}"
    )


def print_results(record: dict) -> None:
    """Rich table (source row first and bold, each domain followed by its subgroups), then the summary line."""
    threshold = record["validation"]["threshold"]
    table = Table(
        title=f"{record['condition']['name']}: trained on {record['source_domain']}",
        caption=f"F1 prec rec acc FPR: at the validation threshold {threshold:.4g}, the same for every domain. "
        "oF1: F1 at the best threshold per domain (chosen with test labels: reference only). "
        "TPR@1/@5: TPR at FPR 1%/5%. n: normal/fault images.",
        box=box.SIMPLE_HEAD, padding=(0, 0), pad_edge=False,
    )
    table.add_column("domain", no_wrap=True)
    for column, _ in TABLE_COLUMNS:
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    results = [record["source_results"], *record["target_results"].values()]
    for index, result in enumerate(results):
        rows = [(result["domain"], result, "bold" if index == 0 else None)]
        rows += [(f" {name}", sub, "dim") for name, sub in result.get("subgroups", {}).items()]
        for name, metrics, style in rows:
            cells = [_cell(metrics.get(key)) for _, key in TABLE_COLUMNS]
            table.add_row(name, *cells, f"{metrics['n_normal']}/{metrics['n_fault']}", style=style)
    console = Console()
    console.print(table)
    console.print(f"results: {record['experiment_path']}/{{metrics.json,predictions.csv,plots/}}", highlight=False, soft_wrap=True)
    console.print(summary_line(record), highlight=False, soft_wrap=True)


NOT_SCALARS = ("domain", "threshold", "n_samples", "n_normal", "n_fault", "subgroups")


def write_plots(
    plots_dir: Path, predictions: pd.DataFrame, threshold: float, source: str,
    examples: dict[str, dict[str, list[Example]]], n_examples: int,
) -> dict[str, Path]:
    """roc.png, score_histograms.png and anomaly_maps_<domain>.png; returns {name: path}."""
    pictures = {
        "roc": save_figure(roc_figure(predictions, threshold, source), plots_dir / "roc.png"),
        "score_histograms": save_figure(histogram_figure(predictions, threshold, source), plots_dir / "score_histograms.png"),
    }
    for domain, kept in examples.items():
        figure = example_grid_figure(domain, kept, n_examples)
        pictures[f"anomaly_maps_{domain}"] = save_figure(figure, plots_dir / f"anomaly_maps_{domain}.png")
    return pictures


def metric_scalars(record: dict) -> dict[str, float]:
    """test/<domain>/<metric> (and test/<domain>/<subgroup>/<metric>), avg and harmonic-mean AUROCs, transfer ratio,
    threshold.
    """
    scalars: dict[str, float] = {}
    for result in [record["source_results"], *record["target_results"].values()]:
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
    """The settings that tell runs apart in TensorBoard's HParams tab (Lightning flattens them to model/...)."""
    keep = ("model", "domain", "evaluation")
    return {
        "name": cfg.name,
        "seed": cfg.seed,
        **{key: OmegaConf.to_container(cfg[key], resolve=True) for key in keep},
        "data": {"image_size": list(cfg.data.image_size), "val_fraction": cfg.data.val_fraction},
    }


def log_to_tensorboard(
    logger: "TensorBoardLogger", record: dict, pictures: dict[str, Path], hparams: dict, step: int,
) -> None:
    """Per-domain scalars, the pictures, and hparams with hp_metric = avg target AUROC (NaN if undefined)."""
    logger.log_metrics(metric_scalars(record), step)
    for name, path in pictures.items():
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        logger.experiment.add_image(f"plots/{name}", pixels, step, dataformats="HWC")
    average = record["avg_target_auroc"]
    logger.log_hyperparams(hparams, metrics={"hp_metric": math.nan if average is None else average})
    (Path(logger.log_dir) / "hparams.yaml").unlink(missing_ok=True)  # written at fit start; rewritten with these
    logger.finalize("success")  # flush and close the event file, save hparams.yaml
