"""Data-path throughput: training images per second decoded from files (cold) vs from the memory cache.

    .venv/bin/python bench/data_throughput.py [--n-train 2000] [--sizes 31x95 256x256] [--batch 32] [--workers 0]

Generates the built-in synthetic dataset (float32 TIFF, 31x95) into a temporary folder, then, for each
target size, times full passes of the source training DataLoader (shuffled, as in training) and keeps
the fastest pass (shared machines are noisy):

    cold    data.cache_limit_mb=0: every image is read from its file, normalised and resized per batch
    cached  the default: the split is held in memory at the target size after the first read

Then the data-wait share of a training step for the default DRAEM config (conf/model/draem.yaml: full
widths, 97M parameters, 224x224, cached data): a few Lightning training steps, timing the wait for each
batch (end of one step to the start of the next: the DataLoader) against the step itself, and, inside
the step, DRAEM's synthetic-anomaly generation. The batch is --draem-batch (default 4: the configured 32
needs more than 24 GiB on CPU); both times grow with the batch, so the share hardly depends on it.

The last line gives the cached/cold ratio per size (goal: at least 10x). A few minutes at most.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from lightning import Callback, Trainer

from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule
from hdmap_train.data.synthetic import SyntheticSpec, generate
from hdmap_train.models import build_model

CONF = Path(__file__).resolve().parents[1] / "conf"


class StepClock(Callback):
    """Seconds waiting for each training batch (previous step's end to this step's start) and in each step."""

    def __init__(self) -> None:
        self.wait, self.step = [], []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.mark = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.wait.append(now - self.mark)
        self.mark = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.step.append(now - self.mark)
        self.mark = now


def draem_data_wait(root: Path, args: argparse.Namespace) -> None:
    """Print the data-wait and anomaly-generation shares of DRAEM training steps (default config)."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        model_cfg = compose("train", ["model=draem"]).model
    dm = MultiDomainHDMAPDataModule(root, "A", [], tuple(model_cfg.image_size), train_batch_size=args.draem_batch,
                                    num_workers=args.workers)
    dm.setup()
    model = build_model(model_cfg)
    generate_s = []
    generate_anomalies = model.augmenter.forward

    def timed_generate(*inputs, **kwargs):
        start = time.perf_counter()
        out = generate_anomalies(*inputs, **kwargs)
        generate_s.append(time.perf_counter() - start)
        return out

    model.augmenter.forward = timed_generate
    clock = StepClock()
    trainer = Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=args.draem_steps + 1, limit_val_batches=0,
                      logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[clock])
    trainer.fit(model, datamodule=dm)  # the datamodule's hook replicates the channels on the device
    wait, step, generate_s = (sum(v[1:]) for v in (clock.wait, clock.step, generate_s))  # the first step warms up
    n_images = args.draem_steps * args.draem_batch
    print(f"\nDRAEM default config ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, "
          f"{model_cfg.image_size[0]}x{model_cfg.image_size[1]}), batch {args.draem_batch}, {args.draem_steps} timed steps:")
    print(f"  data wait {1000 * wait / n_images:.1f} ms/image, step {1000 * step / n_images:.0f} ms/image "
          f"(of which anomaly generation {1000 * generate_s / n_images:.0f} ms/image)")
    print(f"data-wait share of a DRAEM training step: {100 * wait / (wait + step):.2g}% "
          f"(anomaly generation: {100 * generate_s / (wait + step):.1f}%)")


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
    parser.add_argument("--draem-batch", type=int, default=4, help="batch of the DRAEM data-wait measurement")
    parser.add_argument("--draem-steps", type=int, default=3, help="timed DRAEM steps (after one warm-up step)")
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
        draem_data_wait(root, args)
    print("cached/cold ratio: " + ", ".join(ratios))


if __name__ == "__main__":
    main()
