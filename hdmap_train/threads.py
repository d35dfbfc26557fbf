"""Torch's CPU threads for a run (`threads=`): torch's default, a number, or `auto` (the cores the machine leaves idle).

On a shared machine torch's default (one intra-op thread per core) oversubscribes the cores: its threads
spin-wait for each other while other processes hold the cores, so a run burns many times the CPU time for
the same work (bench/threads.py measures it). `threads=auto` takes the cores minus the 1-minute load average.
"""

import logging
import os

log = logging.getLogger(__name__)


def torch_threads(setting: int | str | None) -> int | None:
    """Threads for `setting`: None (torch's default: OMP_NUM_THREADS, else every core), an int, or "auto"."""
    if setting is None:
        return None
    cores = len(os.sched_getaffinity(0))
    if setting == "auto":
        return max(1, min(cores, round(cores - os.getloadavg()[0])))
    if isinstance(setting, int) and setting >= 1:
        return setting
    raise ValueError(f"threads={setting} must be a positive integer, auto or null")


def apply_threads(setting: int | str | None) -> None:
    """Set torch's intra-op threads from `threads=` (nothing for null) and log the choice."""
    import torch

    threads = torch_threads(setting)
    if threads is not None:
        torch.set_num_threads(threads)
        log.info("CPU threads: %d (threads=%s)", threads, setting)
