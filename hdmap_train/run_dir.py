"""The owner of a run directory: the lock against a second run, what an earlier attempt left there (its record,
its checkpoints), checkpoint checks. The record itself (metrics.json) is hdmap_train.results'.

One run directory holds one run. `claim` takes an exclusive lock (`.run.lock`, or `.sweep.lock` for a
sweep directory) that the operating system frees when the process ends, killed or not, so a second
run into a live run's directory stops at once, and a directory left by a killed run is free again.
`hydra_callbacks.RunDirectoryGuard` claims the directory before Hydra writes anything into it.

An earlier attempt in the directory is one of: a successful record of the same config (not trained
again), a `checkpoints/last.ckpt` written by the same config (training resumes from it), or nothing usable.
A metrics.json that cannot be read, and checkpoints of another config, are kept aside under another name,
never silently overwritten or trusted; a run that trains anew starts with no checkpoint in `checkpoints/`.
"""

import fcntl
import logging
import os
import signal
import socket
import zipfile
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hdmap_train.checkpoints import RESUME_NEUTRAL_KEYS, read_stamp, stamp_differences
from hdmap_train.errors import HdmapError
from hdmap_train.job_names import comparable_config, config_differences
from hdmap_train.results import RECORD_NAME, RunRecord, load_record

log = logging.getLogger(__name__)

RUN_LOCK, SWEEP_LOCK = ".run.lock", ".sweep.lock"


_held: list[int] = []  # lock file descriptors, open for this process's lifetime


def claim(directory: Path, lock_name: str = RUN_LOCK) -> None:
    """Create `directory` and lock it for this process; HdmapError if it cannot be created or another run holds it."""
    what = "sweep directory (hydra.sweep.dir)" if lock_name == SWEEP_LOCK else "run directory (hydra.run.dir)"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / lock_name, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        msg = f"Cannot write the {what} {directory}: {exc.strerror}. Choose a writable folder with {what.split()[-1][1:-1]}=<dir>."
        raise HdmapError(msg) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        msg = (
            f"The {what} {directory} is in use by a live run ({owner}). Wait for it to finish, or give this run "
            f"another {what.split()[-1][1:-1]}=<dir>."
        )
        raise HdmapError(msg) from None
    os.ftruncate(fd, 0)
    gpus = f" on GPU {os.environ['CUDA_VISIBLE_DEVICES']}" if os.environ.get("CUDA_VISIBLE_DEVICES") else ""
    owner = f"pid {os.getpid()} on {socket.gethostname()}{gpus} since {datetime.now():%Y-%m-%d %H:%M:%S}"
    os.pwrite(fd, owner.encode(), 0)
    _held.append(fd)


HYDRA_ONLY = {".hydra", "train.log", RUN_LOCK}  # what Hydra and the lock put into a run folder before the run starts


def discard_unused(run_dir: Path) -> None:
    """Remove a run folder that holds nothing but HYDRA_ONLY (a run stopped by a config error); a folder holding
    anything else (an earlier run's results) is left as it is.
    """
    import shutil

    if run_dir.is_dir() and not {path.name for path in run_dir.iterdir()} - HYDRA_ONLY:
        shutil.rmtree(run_dir, ignore_errors=True)


def check_checkpoint(path: Path, origin: str) -> None:
    """Stop with one line when `path` is not a complete checkpoint (missing, truncated, corrupt); torch not needed.

    origin: how the path was chosen, for the message ("ckpt_path", "resume" or "run": a finished run's).
    """
    fix = {"ckpt_path": "pass another ckpt_path=<file> or ckpt_path=null",
           "resume": f"delete it (rm {path}) to train this run from scratch",
           "run": "train the run again, or restore the file"}[origin]
    if not path.is_file():
        raise HdmapError(f"Checkpoint {path} (ckpt_path) does not exist: {fix}.")
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                broken = "no data.pkl"
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        broken = str(exc)
    if broken is not None:
        found = {"resume": "found on resume", "ckpt_path": "given as ckpt_path", "run": "the run's best checkpoint"}[origin]
        raise HdmapError(f"Checkpoint {path} ({found}) is truncated or corrupt ({broken}): {fix}.")


def read_record(run_dir: Path) -> RunRecord | None:
    """metrics.json of run_dir, or None. An unreadable one is renamed to metrics.corrupt-<time>.json (with a warning)."""
    path = run_dir / RECORD_NAME
    if not path.is_file():
        return None
    try:
        return load_record(path)
    except (ValueError, UnicodeDecodeError) as exc:
        kept = path.with_name(f"metrics.corrupt-{datetime.now():%Y%m%d-%H%M%S}.json")
        os.replace(path, kept)
        log.warning("%s is unreadable (%s); kept as %s, training anew", path, exc, kept.name)
        return None


def earlier_attempt(cfg: DictConfig, run_dir: Path) -> tuple[RunRecord | None, str | None]:
    """What an earlier invocation left in run_dir: its successful record, or a last checkpoint to resume from.

    A failed record of another config (result-neutral keys aside) is ignored: the run starts over. A
    successful record of another config is never overwritten: HdmapError names the differing keys. A run that
    starts over finds no checkpoint in checkpoints/ (they are set aside), unless ckpt_path names one there.
    """
    given = cfg.get("ckpt_path")
    checkpoints = run_dir / "checkpoints"
    if given and Path(given).absolute().parent == checkpoints.absolute():
        checkpoints = None  # the user resumes from one of them by hand: nothing is moved

    def set_aside(why: str) -> None:
        if checkpoints is not None:
            set_aside_checkpoints(run_dir, why)

    record = read_record(run_dir)
    if record is not None:
        differences = config_differences(
            comparable_config(OmegaConf.to_container(cfg, resolve=True)), comparable_config(record["condition"]["config"])
        )
        if differences and record["status"] == "success":
            msg = (
                f"{run_dir} holds a finished run of another config (it differs in {', '.join(differences[:5])}); "
                "it is not overwritten. Give this run another hydra.run.dir (or hydra.sweep.dir), or delete that folder."
            )
            raise HdmapError(msg)
        if differences:
            log.warning("%s was written with another config; training from scratch", run_dir / RECORD_NAME)
            set_aside("of another config")
            return None, None
        if record["status"] == "success":
            return record, None
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        try:
            differs = stamp_differences(read_stamp(last), OmegaConf.to_container(cfg, resolve=True), RESUME_NEUTRAL_KEYS)
        except Exception:  # unreadable: the resume check names the file and the fix
            return None, str(last)
        if differs is None:
            return None, str(last)
        set_aside(f"of another config ({', '.join(differs[:5]) or 'written without a config stamp'})")
    else:
        set_aside("without a last.ckpt to resume from")
    return None, None


def set_aside_checkpoints(run_dir: Path, why: str) -> None:
    """Rename a non-empty run_dir/checkpoints to checkpoints.set-aside-<time>/ (with a warning), so training anew starts
    with none there (no best-v1.ckpt beside a stale best.ckpt, no stale last.ckpt resumed later).
    """
    folder = run_dir / "checkpoints"
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    kept = folder.with_name(f"checkpoints.set-aside-{datetime.now():%Y%m%d-%H%M%S-%f}")
    os.replace(folder, kept)
    log.warning("%s holds checkpoints %s; kept as %s, training from scratch", folder, why, kept.name)


def finished_record(run_dir: Path) -> RunRecord:
    """The run's metrics.json, which must say success (read only: an unreadable one is reported, never moved)."""
    path = run_dir / RECORD_NAME
    try:
        record = load_record(path)
    except (OSError, ValueError) as exc:
        raise HdmapError(f"{path} cannot be read ({exc}): run= must be a run directory holding metrics.json.") from None
    if record.get("status") != "success":
        raise HdmapError(f"{run_dir} is not a finished run (status {record.get('status')}): only successful runs are evaluated.")
    return record


def best_checkpoint(run_dir: Path, record: RunRecord, without_it: str) -> Path:
    """The finished run's best checkpoint: under <run>/checkpoints/ first (a copied or moved run has its own), else
    as recorded; HdmapError saying `without_it` (what can still be done) when it is gone, and one line when it is
    damaged or was written by another config (a checkpoint outside the run must carry the run's config stamp).
    """
    recorded = Path(record.get("best_checkpoint") or "best.ckpt")
    own = run_dir / "checkpoints" / recorded.name
    path = next((p for p in (own, recorded) if p.is_file()), None)
    if path is None:
        raise HdmapError(f"The best checkpoint {recorded} of {run_dir} is missing (also under {run_dir / 'checkpoints'}); {without_it}.")
    check_checkpoint(path, "run")
    try:
        differs = stamp_differences(read_stamp(path), (record.get("condition") or {}).get("config") or {})
    except Exception as exc:  # a zip whose pickle cannot be read
        raise HdmapError(f"Checkpoint {path} is truncated or corrupt ({exc}): train the run again, or restore the file.") from None
    if differs is None or (not differs and path == own):  # own checkpoints of runs before the stamp carry none
        return path
    why = f"it differs in {', '.join(differs[:5])}" if differs else "it carries no config stamp and lies outside the run"
    raise HdmapError(f"Checkpoint {path} was not written by the run {run_dir} ({why}): refused; copy the run's own "
                     f"checkpoints/ into {run_dir / 'checkpoints'}, or train the run again.")


def interruption_message(run_dir: Path, engine) -> str:
    """What an interrupted run says: when it stopped and how to resume it."""
    if engine is None or not (run_dir / "checkpoints" / "last.ckpt").is_file():
        return "Interrupted (Ctrl-C) before a training epoch was saved; run the command again to start over."
    return (
        f"Interrupted (Ctrl-C) during training after epoch {engine.trainer.current_epoch}. To resume, run the same "
        f"command with hydra.run.dir={run_dir} (it continues from checkpoints/last.ckpt)."
    )


def end_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent (the worker) ends, so a stopped sweep leaves no orphan job."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
