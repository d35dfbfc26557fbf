"""Synthetic-anomaly synthesis per batch on the CPU: anomalib's per-image Perlin generator against the batched one.

Prints the median time per batch (batch 32, 3 channels) of (a) anomalib's PerlinAnomalyGenerator (the
peer), (b) hdmap_train.data.perlin.BatchedPerlinAnomalyGenerator on the CPU (compact path) and (c) the
same with the static path every non-CPU device takes (all transforms for all images, no host
synchronisation), and the per-image (before) against the batched CutPaste generators, at paper size (224x224) and
CPU size (32x96), measured alternately in one run; the speed-up stock / batched at paper size last.

    .venv/bin/python bench/augment.py [--repeats 7] [--threads 1]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator

from hdmap_train.data.cutpaste import CutPasteGenerator, SeverityCutPasteGenerator
from hdmap_train.data.perlin import BatchedPerlinAnomalyGenerator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import cutpaste_reference  # noqa: E402 - the per-image CutPaste generators, as before batching


def main() -> None:
    """Time each generator alternately and print the medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ratios = {}
    for height, width in [(32, 96), (224, 224)]:
        images = torch.rand(32, 3, height, width)
        cut = {"cut_w_range": (2, width // 2), "cut_h_range": (2, height // 4)}
        generators = {
            "anomalib Perlin (per image)": PerlinAnomalyGenerator(blend_factor=(0.1, 1.0)),
            "batched Perlin (CPU path)": BatchedPerlinAnomalyGenerator(blend_factor=(0.1, 1.0)),
            "batched Perlin (static path)": BatchedPerlinAnomalyGenerator(blend_factor=(0.1, 1.0), compact=False),
            "CutPaste (per image)": cutpaste_reference.CutPasteGenerator(**cut),
            "CutPaste (batched)": CutPasteGenerator(**cut),
            "SevNet CutPaste (per image)": cutpaste_reference.SeverityCutPasteGenerator(patch_width_range=(2, width // 2)),
            "SevNet CutPaste (batched)": SeverityCutPasteGenerator(patch_width_range=(2, width // 2)),
        }
        times = {name: [] for name in generators}
        torch.manual_seed(0)
        for _ in range(args.repeats):
            for name, generator in generators.items():
                start = time.perf_counter()
                generator(images)
                times[name].append(time.perf_counter() - start)
        print(f"{height}x{width}, batch 32, {args.threads} thread(s), median of {args.repeats}:")
        for name, values in times.items():
            print(f"  {name:30s} {1000 * statistics.median(values):8.1f} ms per batch")
        stock = statistics.median(times["anomalib Perlin (per image)"])
        ratios[(height, width)] = stock / statistics.median(times["batched Perlin (CPU path)"])
        print(f"  speed-up anomalib / batched (CPU path) at {height}x{width}: {ratios[(height, width)]:.2f}x")
    print(f"speed-up anomalib / batched Perlin at 224x224: {ratios[(224, 224)]:.2f}x")


if __name__ == "__main__":
    main()
