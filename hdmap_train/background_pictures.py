"""A sweep job's pictures drawn by a helper process while the next job runs.

When a multirun's launcher runs its jobs one after another in this process (hydra/launcher=gpus at
n_jobs=1, Hydra's basic launcher), each job hands its pictures (outputs.write_pictures: plots/*.png and
their TensorBoard images) to one helper process and goes on. The helper is spawned at the first job's
start (its imports overlap that job's training) and kept for the sweep, at the lowest CPU priority (the
jobs' training gets the cores first, the pictures their idle time). A job's metrics.json says
"success" only once its pictures are written: until then it says "failed" with PICTURES_PENDING as its
error (what a sweep killed meanwhile leaves, so that running the sweep again redoes the job), and a
picture error makes it "failed" with that error. The record is written as soon as the pictures are done
(from the helper's result thread); the sweep summary waits for every one (wait_for_pictures), and so
does the interpreter at exit. At most MAX_PENDING jobs wait for their pictures: a job that would add
one more waits for the oldest.
"""

import logging
import multiprocessing
import os
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from hydra.types import RunMode
from omegaconf import DictConfig

from hdmap_train.devices import JOBLIB_LAUNCHER, parallel_jobs
from hdmap_train.startup import heavy_imports

log = logging.getLogger(__name__)
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
MAX_PENDING = 2
HELPER_NICENESS = 19  # the lowest priority (os.nice)
PICTURES_PENDING = "The sweep stopped while this job's pictures were drawn; run the sweep again to redo the job."

_helper: ProcessPoolExecutor | None = None
_pending: list[threading.Event] = []  # set once a job's record is written, oldest first
_lock = threading.Lock()


def jobs_run_here(hydra_cfg: DictConfig) -> bool:
    """Whether this is a multirun whose launcher runs the jobs one after another in this process."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return False
    launcher = hydra_cfg.launcher.get("_target_")
    return launcher == BASIC_LAUNCHER or (launcher == JOBLIB_LAUNCHER and parallel_jobs(int(hydra_cfg.launcher.n_jobs)) == 1)


def _start_in_helper() -> None:
    """The helper finishes the pictures it has when Ctrl-C stops the sweep (the terminal signals every process), and
    runs at the lowest CPU priority: the next job's training gets the cores first, the pictures their idle time.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(HELPER_NICENESS - os.nice(0))


def start_helper() -> None:
    """Start the helper process (if not yet running) and let it import what it draws with, while the job trains."""
    _submit(_import_outputs)


def _import_outputs() -> None:
    with heavy_imports():  # no garbage collection while they import, none of their objects scanned afterwards
        import hdmap_train.tensorboard_log  # noqa: F401 - matplotlib, PIL, pandas, sklearn: seconds, once per helper


def draw(*pictures) -> Future:
    """outputs.write_pictures(*pictures) in the helper process."""
    from hdmap_train.tensorboard_log import write_pictures  # matplotlib, PIL: not for --help or a config error

    return _submit(write_pictures, *pictures)


def _submit(function, *args) -> Future:
    """function(*args) in the helper process, started on first use and again if it died (killed, out of memory:
    the jobs whose pictures it was drawing get that error).
    """
    global _helper
    if _helper is not None:
        try:
            return _helper.submit(function, *args)
        except BrokenProcessPool:
            pass
    _helper = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_in_helper)
    return _helper.submit(function, *args)


def write_when_drawn(pictures: Future, record: dict, path: Path, then=None) -> None:
    """Write `record`, a successful run's (its metrics.json on disk says PICTURES_PENDING), to `path` once its
    pictures are drawn: as it is, or "failed" with the pictures' error; then call `then` (if given).
    """
    from hdmap_train.atomic_files import write_json_atomic

    written = threading.Event()

    def finish(drawn: Future) -> None:
        try:
            if (error := drawn.exception()) is not None:
                record["status"], record["error"] = "failed", f"Pictures not written: {type(error).__name__}: {error}"
                log.error("%s: %s", path.parent, record["error"])
            write_json_atomic(path, record)
            if then is not None:
                then()
        finally:
            with _lock:
                _pending.remove(written)
            written.set()

    with _lock:
        _pending.append(written)
    pictures.add_done_callback(finish)
    while True:
        with _lock:
            oldest = _pending[0] if len(_pending) > MAX_PENDING else None
        if oldest is None:
            return
        oldest.wait()


def wait_for_pictures() -> None:
    """Return once every job's pictures are drawn and its record written."""
    with _lock:
        waiting = list(_pending)
    for written in waiting:
        written.wait()
