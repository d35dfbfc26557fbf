"""Devices of a sweep job: a leased GPU slot under the joblib launcher, and the job's share of CPU threads.

`hydra/launcher=gpus` runs jobs in loky worker processes that are reused from job to job. A job
therefore picks its GPUs itself, before CUDA starts in its process: it leases a free slot (one lock
file per slot under <sweep dir>/.gpu_locks, held for the job's duration and freed by the OS if the
process dies) and points CUDA_VISIBLE_DEVICES at the slot's GPUs. Each group of `gpus_per_job` GPUs
has `jobs_per_gpu` slots, so up to that many small jobs share one GPU. A worker whose CUDA is already
running (an earlier job of the same worker) can only use the GPUs it started with, so it waits for a
slot on those GPUs again.
"""

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import takewhile
from pathlib import Path

from filelock import FileLock, Timeout
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from hdmap_train.errors import HdmapError

log = logging.getLogger(__name__)

JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
LOCK_DIR_NAME = ".gpu_locks"

_process_gpus: list[str] | None = None  # this process's GPUs before its first lease narrowed CUDA_VISIBLE_DEVICES
_pinned_gpus: list[str] | None = None  # the GPUs this process's CUDA (if started) is bound to


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (indices or UUIDs).

    Counted without starting CUDA. After a lease narrowed CUDA_VISIBLE_DEVICES, the list from before it.
    """
    if _process_gpus is not None:
        return list(_process_gpus)
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:  # as CUDA reads it: the entries before the first empty or negative one
        return list(takewhile(lambda gpu: gpu and not gpu.startswith("-"), (gpu.strip() for gpu in listed.split(","))))
    import torch  # only here and once a job runs: the launcher and --help stay light

    return [str(index) for index in range(torch.cuda.device_count())]


def check_sharing(gpus_per_job: int, jobs_per_gpu: int) -> None:
    """Reject GPU counts no slot can have: fewer than one GPU or job, or several jobs sharing several GPUs."""
    if int(gpus_per_job) < 1 or int(jobs_per_gpu) < 1:
        raise HdmapError(f"gpus_per_job={gpus_per_job} and jobs_per_gpu={jobs_per_gpu} must both be at least 1.")
    if int(gpus_per_job) > 1 and int(jobs_per_gpu) > 1:
        raise HdmapError(
            f"jobs_per_gpu={jobs_per_gpu} with gpus_per_job={gpus_per_job}: only single-GPU jobs share a GPU; "
            "set gpus_per_job=1 or jobs_per_gpu=1."
        )


def gpu_slots(gpus_per_job: int, jobs_per_gpu: int = 1) -> int:
    """Number of jobs that can run at once, each on `gpus_per_job` GPUs shared by `jobs_per_gpu` jobs (1 without GPUs)."""
    check_sharing(gpus_per_job, jobs_per_gpu)
    return max(1, len(visible_gpus()) // int(gpus_per_job) * int(jobs_per_gpu))


OmegaConf.register_new_resolver("hdmap_gpu_slots", gpu_slots, replace=True)


class GpuSlots:
    """The visible GPUs cut into groups of `gpus_per_job`, each leased as `jobs_per_gpu` slots (one lock file each).

    Slot i holds group i % len(groups), so the first free slot spreads jobs over the GPUs before they share one.
    """

    def __init__(self, lock_dir: Path, gpus: list[str], gpus_per_job: int = 1, jobs_per_gpu: int = 1,
                 poll_seconds: float = 0.5) -> None:
        check_sharing(gpus_per_job, jobs_per_gpu)
        if gpus_per_job > len(gpus):
            raise HdmapError(
                f"gpus_per_job={gpus_per_job} cannot be served by the {len(gpus)} visible GPU(s) {gpus}: "
                "set gpus_per_job between 1 and the number of GPUs (or CUDA_VISIBLE_DEVICES)."
            )
        self.lock_dir = lock_dir
        groups = [gpus[start:start + gpus_per_job] for start in range(0, len(gpus) - gpus_per_job + 1, gpus_per_job)]
        self.slots = groups * jobs_per_gpu
        self.poll_seconds = poll_seconds

    @contextmanager
    def lease(self, gpus: list[str] | None = None) -> Iterator[tuple[int, list[str]]]:
        """Wait for a free slot (or one on exactly `gpus`) and hold it inside the block; yields (slot index, its GPUs)."""
        candidates = [index for index, slot in enumerate(self.slots) if gpus is None or slot == gpus]
        index, lock = self._acquire(candidates)
        try:
            yield index, self.slots[index]
        finally:
            lock.release()

    def _acquire(self, candidates: Iterable[int]) -> tuple[int, FileLock]:
        """Try the candidate slots' locks in turn until one is free."""
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        while True:
            for index in candidates:
                lock = FileLock(self.lock_dir / f"slot{index}.lock", blocking=False)
                try:
                    lock.acquire()
                except Timeout:
                    continue
                return index, lock
            time.sleep(self.poll_seconds)


@contextmanager
def gpu_lease(lock_dir: Path, gpus_per_job: int, jobs_per_gpu: int = 1) -> Iterator[list[str]]:
    """Lease GPUs for one job of this process and set CUDA_VISIBLE_DEVICES to them (nothing without GPUs)."""
    global _process_gpus, _pinned_gpus
    gpus = visible_gpus()
    if not gpus:
        yield []
        return
    cuda_started = "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized()
    if cuda_started and _pinned_gpus is None:
        raise HdmapError(
            "CUDA was started in this process before the job leased its GPU, so CUDA_VISIBLE_DEVICES can no "
            "longer choose one: do not touch torch.cuda at import time or in Hydra callbacks."
        )
    _process_gpus = gpus
    slots = GpuSlots(lock_dir, gpus, gpus_per_job, jobs_per_gpu)
    with slots.lease(_pinned_gpus if cuda_started else None) as (index, leased):
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(leased)
        _pinned_gpus = leased
        log.info("Leased GPU slot %d: CUDA_VISIBLE_DEVICES=%s", index, os.environ["CUDA_VISIBLE_DEVICES"])
        yield leased


def parallel_jobs(n_jobs: int) -> int:
    """Joblib's n_jobs as a count of processes (negative values count back from the CPU count)."""
    return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)


def cpu_threads(n_jobs: int) -> int:
    """Torch threads for one of `n_jobs` parallel jobs: an equal share of this process's CPU cores."""
    return max(1, len(os.sched_getaffinity(0)) // parallel_jobs(n_jobs))


@contextmanager
def job_devices(hydra_cfg: DictConfig, gpus_per_job: int, jobs_per_gpu: int = 1) -> Iterator[None]:
    """Under the joblib launcher (hydra/launcher=gpus): this job's CPU thread share and its GPU lease."""
    if hydra_cfg.mode != RunMode.MULTIRUN or hydra_cfg.launcher.get("_target_") != JOBLIB_LAUNCHER:
        yield
        return
    import torch

    threads = cpu_threads(int(hydra_cfg.launcher.n_jobs))
    torch.set_num_threads(threads)
    log.info("Job %s: %d CPU thread(s)", hydra_cfg.job.num, threads)
    with gpu_lease(Path(hydra_cfg.sweep.dir) / LOCK_DIR_NAME, gpus_per_job, jobs_per_gpu):
        yield
