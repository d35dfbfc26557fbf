"""Inference latency as MVTec AD 2 reports it: batch size 1 at the model's configured image size, --warmup passes,
then --passes timed passes, each timed until the image score and the anomaly map are on the host (`.cpu()` of the
outputs, torch.cuda.synchronize on a GPU); mean / std / min / max ms and the peak memory.

    .venv/bin/python bench/latency.py                                    # GPU: 1000 + 1000 passes, draem patchcore
    .venv/bin/python bench/latency.py --warmup 50 --passes 200           # a CPU: fewer passes
    .venv/bin/python bench/latency.py --models draem --size tiny --warmup 2 --passes 5   # a quick check (tests)

Each model is composed as `python -m hdmap_train model=<m> [size=<s>]` composes it (conf/model/<m>.yaml: paper size
by default) and built by hdmap_train.models.build_model, in its own process (so its peak memory is its own), on the
built-in synthetic dataset in a temporary folder. Pretrained backbones come from the local Hugging Face cache; where
a model's file is missing there, it is built with weights=random (seeded random weights, the same architecture and
cost) and the weights column says so. Memory-bank models (PatchCore, PaDiM) are fitted on --n-train images first (the
bank's rows are shown); the others keep their initial weights (values do not change the cost). The input is the
first source test image as the datamodule feeds it, already on the device: data loading is not timed. Peak memory:
on a GPU torch.cuda.max_memory_allocated and max_memory_reserved over the passes; on a CPU the process's peak RSS
(resource.getrusage: building, fitting and the passes). The table goes to stdout; its last line is a summary.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "conf"
COLUMNS = ["model", "image size", "weights", "bank rows", "warm-up", "passes", "mean ms", "std ms", "min ms", "max ms",
           "peak MiB"]


def compose_model(model: str, args: argparse.Namespace, work: Path, random_weights: bool):
    """The run config of `model` on synthetic domain A (no targets), every path in `work`."""
    from hydra import compose, initialize_config_dir

    overrides = [f"model={model}", f"trainer={'gpu' if args.cuda else 'cpu'}", "data=synthetic",
                 f"data.synthetic.n_train={args.n_train}", "data.synthetic.n_test=1", "+data.synthetic.domains=[A]",
                 "domain.targets=[]", f"paths.root_dir={work}", f"paths.cache_dir={work / 'cache'}",
                 f"paths.output_dir={work / 'run'}", *([f"size={args.size}"] if args.size else []),
                 *(["weights=random"] if random_weights else [])]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides)


def built(model_name: str, args: argparse.Namespace, work: Path) -> tuple:
    """(config, model, weights note): pretrained from the local cache, else weights=random."""
    from hdmap_train.models import build_model
    from hdmap_train.weights import MissingWeightsError

    cfg = compose_model(model_name, args, work, random_weights=False)
    try:
        return cfg, build_model(cfg.model), "pretrained" if cfg.model.get("pretrained_backbone") else "none"
    except MissingWeightsError:
        cfg = compose_model(model_name, args, work, random_weights=True)
        return cfg, build_model(cfg.model), "random (not in the local cache)"


def measure(model_name: str, args: argparse.Namespace) -> dict:
    """One model's row: build (and fit a memory bank), warm up, time the passes."""
    import torch
    from anomalib.models.components import MemoryBankMixin
    from lightning import Trainer
    from omegaconf import OmegaConf

    from hdmap_train.data.datamodule import build_datamodule
    from hdmap_train.efficiency import synchronize

    device = torch.device("cuda" if args.cuda else "cpu")
    with tempfile.TemporaryDirectory(prefix="hdmap-latency-") as tmp:
        cfg, model, weights = built(model_name, args, Path(tmp))
        datamodule = build_datamodule(cfg.data, cfg.domain, cfg.seed)
        datamodule.setup()
        if isinstance(model, MemoryBankMixin):
            trainer = Trainer(**{**OmegaConf.to_container(cfg.trainer, resolve=True), **model.trainer_arguments,
                                 "max_epochs": 1, "limit_val_batches": 0, "num_sanity_val_steps": 0, "logger": False,
                                 "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False})
            trainer.fit(model, datamodule=datamodule)
        batch = datamodule.on_after_batch_transfer(next(iter(datamodule.test_dataloaders()["domain_A"])), 0)
    image = batch.image[:1].to(device).contiguous()
    model = model.to(device).eval()
    bank = getattr(getattr(model, "model", None), "memory_bank", None)

    def one_pass() -> float:
        start = time.perf_counter()
        out = model(image)
        for tensor in (out.pred_score, out.anomaly_map):  # on the host: what the timer waits for
            if tensor is not None:
                tensor.cpu()
        synchronize(device)
        return time.perf_counter() - start

    if args.cuda:
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        for _ in range(args.warmup):
            one_pass()
        times = [1000 * one_pass() for _ in range(args.passes)]
    peak = ({"allocated": torch.cuda.max_memory_allocated(device), "reserved": torch.cuda.max_memory_reserved(device)}
            if args.cuda else {"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})
    return {"model": model_name, "image size": "x".join(str(s) for s in image.shape[-2:]), "weights": weights,
            "bank rows": int(bank.shape[0]) if isinstance(bank, torch.Tensor) and bank.ndim == 2 else None,
            "warm-up": args.warmup, "passes": args.passes, "mean ms": statistics.fmean(times),
            "std ms": statistics.pstdev(times), "min ms": min(times), "max ms": max(times), "peak": peak}


def cell(row: dict, column: str) -> str:
    """One table cell: ms with 2 decimals, peak memory in MiB (allocated / reserved on a GPU), '-' for none."""
    if column == "peak MiB":
        return " / ".join(f"{value / 2**20:.0f}" for value in row["peak"].values())
    value = row[column]
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["draem", "patchcore"], help="conf/model/ names")
    parser.add_argument("--size", help="conf/size/ name (default: the model files' own, paper size)")
    parser.add_argument("--warmup", type=int, default=1000, help="untimed passes first")
    parser.add_argument("--passes", type=int, default=1000, help="timed passes")
    parser.add_argument("--n-train", type=int, default=200, help="training images a memory bank is fitted on")
    parser.add_argument("--cpu", action="store_true", help="measure on the CPU even where CUDA is available")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one model, its row as JSON
    args = parser.parse_args()
    import torch

    args.cuda = torch.cuda.is_available() and not args.cpu
    if args.child:
        print(json.dumps(measure(args.models[0], args)))
        return
    device = torch.cuda.get_device_name() if args.cuda else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    peak = "torch.cuda.max_memory_allocated / max_memory_reserved over the passes" if args.cuda else \
        "the process's peak RSS (build, fit, passes)"
    rows, failed = [], []
    for model in args.models:
        command = [sys.executable, __file__, *sys.argv[1:], "--child", "--models", model]  # the last --models wins
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        else:
            failed.append(model)
            print(f"{model} failed:\n{result.stderr[-3000:]}", file=sys.stderr)
    print(f"{device}, torch {torch.__version__}, batch 1, size={args.size or 'paper'}; peak MiB = {peak}\n")
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(cell(row, column) for column in COLUMNS) + " |")
    means = ", ".join(f"{row['model']} {row['mean ms']:.2f} ms" for row in rows)
    print(f"\nsummary: mean latency per image (batch 1, {'GPU' if args.cuda else 'CPU'}, {args.warmup} warm-up + "
          f"{args.passes} timed passes): {means}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
