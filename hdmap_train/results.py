"""metrics.json and predictions.csv (written atomically), the end-of-run results table and summary line."""

import json
import os
import platform
import tempfile
from importlib.metadata import version
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

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
    """model | source AUROC | avg target AUROC | transfer ratio | status | run dir, on one line."""
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
