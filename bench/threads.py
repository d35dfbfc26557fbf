"""CPU seconds and wall seconds of one run at load 0 and under a synthetic load, per `threads=` setting.

    .venv/bin/python bench/threads.py [--load N] [--settings null,auto,1] [-- extra overrides]

Each setting runs the same tiny CPU run (synthetic data, DRAEM size=tiny, 2 epochs) in a subprocess, first on
an otherwise idle machine, then while N busy-loop processes (default: one per core) compete for the cores.
CPU seconds are the child's user + system time (resource.getrusage). Run it on a quiet machine: the "load 0"
rows are only load 0 when nothing else runs (BENCHMARKS.md, "A loaded machine").
"""

import argparse
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time

RUN = ["-m", "hdmap_train", "data=synthetic", "model=draem", "size=tiny", "trainer=cpu", "model.max_epochs=2",
       "evaluation.plots=false", "trainer.enable_progress_bar=false"]


def spin(stop) -> None:
    """A synthetic load: one core busy until `stop` is set."""
    while not stop.is_set():
        sum(range(10_000))


def timed_run(threads: str, extra: list[str], folder: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run in a subprocess."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, *RUN, f"threads={threads}", f"hydra.run.dir={folder}/{threads}-{time.time_ns()}",
                    f"paths.cache_dir={folder}/cache", *extra], check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    """Print one row per (load, threads setting)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", type=int, default=len(os.sched_getaffinity(0)), help="busy processes under load")
    parser.add_argument("--settings", default="null,auto,1", help="threads= values, comma-separated")
    parser.add_argument("extra", nargs="*", help="more overrides for every run")
    args = parser.parse_args()
    print("| load (busy processes) | threads | wall s | CPU s |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="hdmap-threads-") as folder:  # removed afterwards, runs and data alike
        timed_run("1", args.extra, folder)  # generates the synthetic dataset once, outside the measurements
        for load in (0, args.load):
            stop = multiprocessing.Event()
            busy = [multiprocessing.Process(target=spin, args=(stop,)) for _ in range(load)]
            for process in busy:
                process.start()
            try:
                for threads in args.settings.split(","):
                    wall, cpu = timed_run(threads, args.extra, folder)
                    print(f"| {load} | {threads} | {wall:.1f} | {cpu:.1f} |", flush=True)
            finally:
                stop.set()
                for process in busy:
                    process.join()


if __name__ == "__main__":
    main()
