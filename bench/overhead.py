"""Overhead of hdmap_train over a plain anomalib Engine script, measured side by side.

Both run the same DRAEM (CPU widths) on the same synthetic data, epochs and seed, each as a fresh
process, alternating (A B B A ...) so that machine noise hits both. Prints the wall-time ratio
hdmap_train / plain (goal <= 1.05) and whether the source AUROC is identical.

    .venv/bin/python bench/overhead.py [--epochs 3] [--repeats 2]
"""

import argparse
import json
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
    root = ensure_dataset(SyntheticSpec(), work / "cache")
    plain = [sys.executable, str(BENCH / "plain_anomalib.py"), "--root", str(root), "--epochs", str(args.epochs)]
    times: dict[str, list[float]] = {"hdmap_train": [], "plain": []}
    aurocs: dict[str, float] = {}
    for repeat in range(args.repeats):
        order = ["hdmap_train", "plain"] if repeat % 2 == 0 else ["plain", "hdmap_train"]
        for name in order:
            if name == "plain":
                seconds, out = timed(plain)
                aurocs[name] = float(out.strip().splitlines()[-1].split("=")[1])
            else:
                run_dir = work / f"run{repeat}"
                seconds, _ = timed([
                    sys.executable, "-m", "hdmap_train", "experiment=quickstart", f"data.root={root}", "data.synthetic=null",
                    f"model.max_epochs={args.epochs}", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}",
                ])
                aurocs[name] = json.loads((run_dir / "metrics.json").read_text())["source_results"]["image_AUROC"]
            times[name].append(seconds)
            print(f"{name:12s} run {repeat}: {seconds:6.1f} s  source AUROC {aurocs[name]:.6f}", flush=True)
    ratio = statistics.median(times["hdmap_train"]) / statistics.median(times["plain"])
    print(f"same source AUROC: {aurocs['hdmap_train'] == aurocs['plain']} ({aurocs['hdmap_train']!r} vs {aurocs['plain']!r})")
    print(f"wall-time ratio hdmap_train / plain anomalib (median of {args.repeats}): {ratio:.3f}")


if __name__ == "__main__":
    main()
