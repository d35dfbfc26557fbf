"""Start-up: how long a config error takes, against importing anomalib's models (the floor of any real run).

`python -m hdmap_train model=nosuch` must answer before torch, Lightning and anomalib are imported
(goal: at most 0.2 of `python -c "import anomalib.models"`). Each command runs `--repeats` times in
alternation; the medians are compared.

    .venv/bin/python bench/startup.py [--repeats 5]
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "config error (model=nosuch)": [sys.executable, "-m", "hdmap_train", "model=nosuch"],
    "--help": [sys.executable, "-m", "hdmap_train", "--help"],
    "--cfg job": [sys.executable, "-m", "hdmap_train", "--cfg", "job"],
    "import anomalib.models": [sys.executable, "-c", "import anomalib.models"],
}


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            times[name].append(seconds(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        print(f"{name:30} median {median:6.2f} s  (of {args.repeats})")
    floor = medians["import anomalib.models"]
    print(f"ratio config error / import anomalib.models: {medians['config error (model=nosuch)'] / floor:.3f}")


if __name__ == "__main__":
    main()
