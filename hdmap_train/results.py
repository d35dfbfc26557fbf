"""metrics.json (written atomically) and the end-of-run results table."""

import json
import os
import platform
import tempfile
from importlib.metadata import version
from pathlib import Path

from rich.console import Console
from rich.table import Table

PACKAGES = ("hdmap_train", "anomalib", "torch", "torchvision", "lightning", "hydra-core", "timm", "numpy")


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that decide a result."""
    return {"python": platform.python_version(), **{name: version(name) for name in PACKAGES}}


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a temporary file next to `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a result file is as readable as any other
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def print_results(record: dict) -> None:
    """Rich table: one row per evaluated domain, then where the results are."""
    table = Table(title=f"{record['condition']['name']}: trained on {record['source_domain']}")
    for column in ("domain", "role", "AUROC", "F1", "threshold", "normal", "fault"):
        table.add_column(column, justify="left" if column in ("domain", "role") else "right")
    rows = [("source", record["source_results"])] + [("target", r) for r in record["target_results"].values()]
    for role, result in rows:
        auroc = result["image_AUROC"]
        table.add_row(
            result["domain"], role, "n/a" if auroc is None else f"{auroc:.4f}", f"{result['image_F1Score']:.4f}",
            f"{result['threshold']:.4g}", str(result["n_normal"]), str(result["n_fault"]),
        )
    console = Console()
    console.print(table)
    average = record["avg_target_auroc"]
    console.print(f"avg target AUROC: {'n/a' if average is None else f'{average:.4f}'}")
    console.print(f"results: {record['experiment_path']}/metrics.json")
