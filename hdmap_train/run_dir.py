"""The owner of a run directory: the metrics.json record, the lock against a second run, what an earlier
attempt left there, checkpoint checks.

The record (RunRecord) is the one description of metrics.json: every writer and reader uses it.

One run directory holds one run. `claim` takes an exclusive lock (`.run.lock`, or `.sweep.lock` for a
sweep directory) that the operating system frees when the process ends, killed or not, so a second
run into a live run's directory stops at once, and a directory left by a killed run is free again.
`RunDirectoryGuard` (a Hydra callback) claims the directory before Hydra writes anything into it.

An earlier attempt in the directory is one of: a successful record of the same config (not trained
again), a `checkpoints/last.ckpt` (training resumes from it), or nothing usable. A metrics.json that
cannot be read is kept aside under another name, never silently overwritten or trusted.
"""

import fcntl
import json
import logging
import os
import socket
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from hdmap_train.domains import source_label
from hdmap_train.errors import HdmapError
from hdmap_train.job_names import comparable_config, config_differences

log = logging.getLogger(__name__)

RUN_LOCK, SWEEP_LOCK = ".run.lock", ".sweep.lock"
RECORD_NAME = "metrics.json"


class DomainResult(TypedDict, total=False):
    """Metrics of one evaluated domain (hdmap_train.evaluation.image_metrics, plus `domain` and `subgroups`)."""

    domain: str
    image_AUROC: float | None
    image_AUPR: float | None
    image_F1Score: float
    image_precision: float
    image_recall: float
    image_accuracy: float
    image_FPR: float
    threshold: float
    oracle_F1Score: float | None
    oracle_threshold: float | None
    TPR_at_FPR_1pct: float | None
    TPR_at_FPR_5pct: float | None
    n_samples: int
    n_normal: int
    n_fault: int
    subgroups: dict[str, dict]


class RunRecord(TypedDict, total=False):
    """metrics.json: written with status "failed" first and "success" only once every step worked."""

    status: str  # success | failed
    error: str | None
    condition: dict  # name, model, config (the full resolved config)
    source_domain: str  # domain_X, or domain_A+domain_B for several source domains
    source_domains: list[str]  # several source domains only: [domain_A, domain_B]
    experiment_path: str  # the run directory
    timestamp: str
    versions: dict[str, str]
    data: dict  # hdmap_train.data.datamodule summary(): root, manifest, split sizes, normalisation, ...
    training_info: dict  # epochs, losses per epoch, images per epoch, fit/test/report seconds, attempts
    best_checkpoint: str
    validation: dict  # threshold_quantile, threshold
    source_results: DomainResult  # several sources: their test sets pooled (domain = the source_domain label)
    source_domain_results: dict[str, DomainResult]  # several sources only: each source domain's test set
    target_results: dict[str, DomainResult]
    avg_target_auroc: float | None
    hmean_target_auroc: float | None  # harmonic mean of the target AUROCs
    hmean_auroc: float | None  # harmonic mean over source and targets
    transfer_ratio: float | None
    transfer_ratio_note: str | None  # why transfer_ratio is null (source AUROC at or below chance, no targets)
    efficiency: dict  # hdmap_train.efficiency.run_efficiency: parameters, inference images/s, peak memory, memory bank


@contextmanager
def written_however_it_ends(record: RunRecord, path: Path) -> Iterator[RunRecord]:
    """The block fills the record; however it ends, the record is written to `path` atomically, an exception's
    type and message as its `error` unless the block set one (it then says "success" only if the block did).
    """
    from hdmap_train.outputs import write_json_atomic

    try:
        yield record
    except BaseException as exc:
        record["error"] = record.get("error") or f"{type(exc).__name__}: {exc}"
        raise
    finally:
        write_json_atomic(path, record)


def new_record(cfg: DictConfig, run_dir: Path, sources: list[str], versions: dict[str, str]) -> RunRecord:
    """The record of a run that has not succeeded yet; sources: the source domain folders (source_domains)."""
    return RunRecord(
        condition={"name": cfg.name, "model": cfg.model.name, "config": OmegaConf.to_container(cfg, resolve=True)},
        status="failed",
        error=None,
        source_domain=source_label(sources),
        **({"source_domains": list(sources)} if len(sources) > 1 else {}),
        experiment_path=str(run_dir),
        timestamp=datetime.now().isoformat(timespec="seconds"),
        versions=versions,
    )
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
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {datetime.now():%Y-%m-%d %H:%M:%S}".encode(), 0)
    _held.append(fd)


class RunDirectoryGuard(Callback):
    """Hydra callback: claim the run (or sweep) directory before Hydra writes its config and log into it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        del kwargs
        self._claim(config, "hydra.run.dir", RUN_LOCK)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        del kwargs
        self._claim(config, "hydra.sweep.dir", SWEEP_LOCK)

    @staticmethod
    def _claim(config: DictConfig, key: str, lock_name: str) -> None:
        HydraConfig.instance().set_config(config)
        try:
            claim(Path(str(OmegaConf.select(config, key))).absolute(), lock_name)
        except HdmapError as exc:  # Hydra would turn an exception here into a warning and go on
            print(f"[ERROR] {exc}", file=sys.stderr)  # Hydra's own log format here has no level
            sys.exit(1)


def check_checkpoint(path: Path, origin: str) -> None:
    """Stop with one line when `path` is not a complete checkpoint (missing, truncated, corrupt); torch not needed.

    origin: how the path was chosen, for the message ("ckpt_path" or "resume").
    """
    fix = "pass another ckpt_path=<file> or ckpt_path=null" if origin == "ckpt_path" else (
        f"delete it (rm {path}) to train this run from scratch"
    )
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
        found = "found on resume" if origin == "resume" else "given as ckpt_path"
        raise HdmapError(f"Checkpoint {path} ({found}) is truncated or corrupt ({broken}): {fix}.")


def read_record(run_dir: Path) -> RunRecord | None:
    """metrics.json of run_dir, or None. An unreadable one is renamed to metrics.corrupt-<time>.json (with a warning)."""
    path = run_dir / RECORD_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or not {"status", "condition"} <= record.keys():
            raise ValueError("not a hdmap_train record")
        return record
    except (ValueError, UnicodeDecodeError) as exc:
        kept = path.with_name(f"metrics.corrupt-{datetime.now():%Y%m%d-%H%M%S}.json")
        os.replace(path, kept)
        log.warning("%s is unreadable (%s); kept as %s, training anew", path, exc, kept.name)
        return None


def earlier_attempt(cfg: DictConfig, run_dir: Path) -> tuple[RunRecord | None, str | None]:
    """What an earlier invocation left in run_dir: its successful record, or a last checkpoint to resume from.

    A failed record of another config (result-neutral keys aside) is ignored: the run starts over. A
    successful record of another config is never overwritten: HdmapError names the differing keys.
    """
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
            log.warning("%s was written with another config; training from scratch", run_dir / "metrics.json")
            return None, None
        if record["status"] == "success":
            return record, None
    last = run_dir / "checkpoints" / "last.ckpt"
    return None, str(last) if last.is_file() else None


def finished_record(run_dir: Path) -> RunRecord:
    """The run's metrics.json, which must say success (read only: an unreadable one is reported, never moved)."""
    path = run_dir / "metrics.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HdmapError(f"{path} cannot be read ({exc}): run= must be a run directory holding metrics.json.") from None
    if record.get("status") != "success":
        raise HdmapError(f"{run_dir} is not a finished run (status {record.get('status')}): only successful runs are evaluated.")
    return record


def best_checkpoint(run_dir: Path, record: RunRecord, without_it: str) -> Path:
    """The finished run's best checkpoint: as recorded, or under <run>/checkpoints/ when the run was moved; HdmapError
    saying `without_it` (what can still be done) when it is gone.
    """
    recorded = Path(record.get("best_checkpoint") or "best.ckpt")
    for path in (recorded, run_dir / "checkpoints" / recorded.name):
        if path.is_file():
            return path
    raise HdmapError(f"The best checkpoint {recorded} of {run_dir} is missing (also under {run_dir / 'checkpoints'}); {without_it}.")
