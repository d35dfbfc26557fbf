"""Data-path throughput: training images per second decoded from files (cold) vs from the memory cache.

    .venv/bin/python bench/data_throughput.py [--n-train 2000] [--sizes 31x95 256x256] [--batch 32] [--workers 0]

Generates the built-in synthetic dataset (float32 TIFF, 31x95) into a temporary folder, then, for each
target size, times full passes of the source training DataLoader (shuffled, as in training) and keeps
the fastest pass (shared machines are noisy):

    cold    data.cache_limit_mb=0: every image is read from its file, normalised and resized per batch
    cached  the default: the split is held in memory at the target size after the first read

The last line gives the cached/cold ratio per size (goal: at least 10x). A few minutes at most.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule
from hdmap_train.data.synthetic import SyntheticSpec, generate


def images_per_second(root: Path, size: tuple[int, int], cache_limit_mb: float, args: argparse.Namespace) -> tuple[float, float]:
    """(setup seconds, images/s of the fastest of `args.epochs` passes of the training loader)."""
    start = time.perf_counter()
    dm = MultiDomainHDMAPDataModule(
        root, "A", [], size, train_batch_size=args.batch, num_workers=args.workers, cache_limit_mb=cache_limit_mb,
        normalization={"mode": "zscore"},
    )
    dm.setup()
    setup_s = time.perf_counter() - start
    loader = dm.train_dataloader()
    rates = []
    for _ in range(args.epochs):
        count, start = 0, time.perf_counter()
        for batch in loader:
            count += len(batch.image)
        rates.append(count / (time.perf_counter() - start))
    return setup_s, max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=2000, help="training images of the source domain")
    parser.add_argument("--sizes", nargs="+", default=["31x95", "256x256"], help="target sizes HxW")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--epochs", type=int, default=3, help="passes timed per measurement (the fastest counts)")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.workers} workers, batch {args.batch}, "
          f"{args.n_train} training images (31x95 float32 TIFF), z-score normalisation, bilinear resize")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        root = generate(SyntheticSpec(n_train=args.n_train, n_test=2, domains=("A",)), Path(tmp) / "data")
        print(f"{'size':>9} {'mode':>7} {'setup s':>8} {'images/s':>10}")
        for size in sizes:
            results = {}
            for mode, limit in (("cold", 0), ("cached", 2048)):
                setup_s, rate = images_per_second(root, size, limit, args)
                results[mode] = rate
                print(f"{size[0]:>4}x{size[1]:<4} {mode:>7} {setup_s:8.2f} {rate:10.0f}")
            ratios.append(f"{size[0]}x{size[1]} {results['cached'] / results['cold']:.1f}x")
    print("cached/cold ratio: " + ", ".join(ratios))


if __name__ == "__main__":
    main()
