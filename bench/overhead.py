"""Overhead of hdmap_train over a plain anomalib Engine script, measured side by side.

Both run the same DRAEM (CPU widths) on the same synthetic data, epochs and seed, each as a fresh
process, in rotating order so that machine noise hits every variant: hdmap_train as users run it,
hdmap_train with evaluation.plots=false (no pictures, like the plain script), and the plain script.
Prints whether the source AUROC is identical, the pictures' own share of the plain run's wall time (the
report_seconds hdmap_train records with pictures minus without, per repeat: measured inside the runs, so
machine noise between processes does not blur it), then the wall-time ratios hdmap_train / plain (goal with
pictures <= 1.03).

    .venv/bin/python bench/overhead.py [--epochs 3] [--repeats 2]
"""

import argparse
import atexit
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hdmap_train.data.synthetic import SyntheticSpec, ensure_dataset

BENCH = Path(__file__).resolve().parent


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hdmap-overhead-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # the runs and data go with the bench
    root = ensure_dataset(SyntheticSpec(), work / "cache")
    hdmap_train = [sys.executable, "-m", "hdmap_train", "experiment=quickstart", f"data.root={root}", "data.synthetic=null",
                   f"model.max_epochs={args.epochs}", "trainer.enable_progress_bar=false"]
    commands = {
        "hdmap_train": hdmap_train,
        "hdmap_train plots=false": [*hdmap_train, "evaluation.plots=false"],
        "plain": [sys.executable, str(BENCH / "plain_anomalib.py"), "--root", str(root), "--epochs", str(args.epochs)],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    aurocs: dict[str, float] = {}
    report_seconds: dict[str, list[float]] = {name: [] for name in commands}
    for repeat in range(args.repeats):
        names = list(commands)[repeat % 3:] + list(commands)[:repeat % 3]  # rotate the order: noise hits all
        for name in names:
            if name == "plain":
                seconds, out = timed(commands[name])
                aurocs[name] = float(out.strip().splitlines()[-1].split("=")[1])
            else:
                run_dir = work / f"run-{list(commands).index(name)}-{repeat}"  # no "=" in a Hydra override value
                seconds, _ = timed([*commands[name], f"hydra.run.dir={run_dir}"])
                record = json.loads((run_dir / "metrics.json").read_text())
                aurocs[name] = record["source_results"]["image_AUROC"]
                report_seconds[name].append(record["training_info"]["report_seconds"])
            times[name].append(seconds)
            print(f"{name:24s} run {repeat}: {seconds:6.1f} s  source AUROC {aurocs[name]:.6f}", flush=True)
    print(f"same source AUROC: {len(set(aurocs.values())) == 1} ({', '.join(f'{v!r}' for v in aurocs.values())})")
    plain = statistics.median(times["plain"])
    pictures = statistics.median(a - b for a, b in zip(report_seconds["hdmap_train"], report_seconds["hdmap_train plots=false"],
                                                       strict=True))
    print(f"pictures (report_seconds with - without, median {pictures:.2f} s) / plain anomalib wall: {pictures / plain:.1%}")
    for name in ("hdmap_train plots=false", "hdmap_train"):
        print(f"wall-time ratio {name} / plain anomalib (median of {args.repeats}): {statistics.median(times[name]) / plain:.3f}")


if __name__ == "__main__":
    main()
