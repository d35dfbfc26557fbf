"""Files written atomically: a temporary file next to the target, flushed to disk, then renamed into place, so a
reader never sees half a file and a crash or a full disk leaves the earlier file (or none), never a truncated one.
"""

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # light: pandas is imported by whoever has a frame to write
    import pandas as pd


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


def write_csv_atomic(path: Path, frame: "pd.DataFrame") -> None:
    """predictions.csv and other tables, written atomically (no index column)."""
    write_atomic(path, lambda handle: frame.to_csv(handle, index=False))
