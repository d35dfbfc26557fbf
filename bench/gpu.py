"""Per-model cost at paper size on a GPU: training and inference images/s, peak memory, data-wait share.

    .venv/bin/python bench/gpu.py [--models draem draem_cutpaste patchcore dinomaly] [--out gpu.md]
    .venv/bin/python bench/gpu.py --tiny --models draem patchcore      # CPU check of the script: seconds
    .venv/bin/python bench/gpu.py --data device_cache=true             # images kept on the GPU (vs pinned loaders)

Each model is composed as `python -m hdmap_train model=<m> trainer=gpu` composes it (conf/model/<m>.yaml,
paper size; --tiny: size=tiny; trainer=cpu without CUDA), on the built-in synthetic dataset generated into
a temporary folder (--n-train normal training images of domain A, --n-test images per test class). For
each model, with its own counters:

    train img/s    one training epoch without its first --warmup batches: images / (data wait + step)
    data wait %    share of that time spent waiting for the batch (DataLoader and the copy to the device)
    fit s          the whole epoch with its end (PatchCore's coreset selection, PaDiM's Gaussian)
    infer img/s    the source test set after a full warm-up pass: images / model step time (data excluded)
    peak MiB       torch.cuda.max_memory_allocated over training and inference, reset per model
                   (without CUDA: the process's peak RSS since the model's start)

Steps are synchronised with the device at both ends (hdmap_train.efficiency.StepTimer). --random-weights
(implied by --tiny) writes seeded random backbone weights into a temporary Hugging Face cache, so no
pretrained file is needed; the weights' values do not change the timings. The Markdown table goes to stdout
and, with --out, to a file.
"""

import argparse
import gc
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from huggingface_hub import constants
from hydra import compose, initialize_config_dir
from lightning import Trainer
from omegaconf import DictConfig, OmegaConf

from hdmap_train.data.datamodule import build_datamodule
from hdmap_train.efficiency import PeakMemory, StepTimer, parameter_counts
from hdmap_train.models import build_model
from hdmap_train.weights import write_random_weights

CONF = Path(__file__).resolve().parents[1] / "conf"
MODELS = ["draem", "draem_cutpaste", "patchcore", "dinomaly"]
COLUMNS = ["model", "image size", "batch", "precision", "parameters (M)", "trainable (M)", "train img/s", "data wait %",
           "fit s", "infer img/s", "peak MiB"]


def compose_model(model: str, args: argparse.Namespace, work: Path) -> DictConfig:
    """The run config of `model` on the synthetic domain A (no targets), with every path in `work`."""
    overrides = [
        f"model={model}", f"trainer={args.trainer}", "data=synthetic", f"data.synthetic.n_train={args.n_train}",
        f"data.synthetic.n_test={args.n_test}", "+data.synthetic.domains=[A]", "domain.targets=[]",
        f"paths.root_dir={work}", f"paths.cache_dir={work / 'cache'}", f"paths.output_dir={work / 'run'}",
        *(["size=tiny"] if args.tiny else []), *(f"data.{setting}" for setting in args.data),
    ]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides)


def use_random_weights(hub: Path) -> None:
    """Point the Hugging Face cache at `hub` (offline), where random backbone weights are written per model."""
    os.environ.update(HF_HOME=str(hub.parent), HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1")
    constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = str(hub), True  # read at import; timm passes no cache_dir


def rate(images: int, seconds: float) -> float:
    return images / seconds if seconds > 0 else float("nan")


def measure(model_name: str, args: argparse.Namespace, work: Path) -> dict:
    """Train one epoch and predict the source test set twice; the table row of `model_name`."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    cfg = compose_model(model_name, args, work)
    if args.random_weights and cfg.model.pretrained_backbone:
        write_random_weights(cfg.model.pretrained_backbone, Path(constants.HF_HUB_CACHE))
    memory = PeakMemory()
    datamodule = build_datamodule(cfg.data, cfg.domain, cfg.seed)
    datamodule.setup()
    model = build_model(cfg.model)
    timer = StepTimer(training=True)
    trainer = Trainer(**{
        **OmegaConf.to_container(cfg.trainer, resolve=True), **model.trainer_arguments,
        "max_epochs": 1, "limit_train_batches": args.train_batches or 1.0, "limit_val_batches": 0, "num_sanity_val_steps": 0,
        "logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
        "callbacks": [timer],
    })
    start = time.perf_counter()
    trainer.fit(model, train_dataloaders=datamodule.train_dataloader())
    fit_seconds = time.perf_counter() - start
    steps = timer.train_steps[args.warmup:] or timer.train_steps
    wait, step, images = (sum(values) for values in zip(*steps, strict=True))
    test = next(iter(datamodule.test_dataloaders().values()))
    trainer.predict(model, dataloaders=test, return_predictions=False)  # warm-up: every batch shape, cuDNN autotuning
    timer.predict_steps.clear()
    trainer.predict(model, dataloaders=test, return_predictions=False)
    inference = timer.inference()
    counts = parameter_counts(model, trainer.optimizers)
    peak = memory.read(trainer.strategy.root_device)
    return {
        "model": model_name, "image size": "x".join(str(s) for s in cfg.model.image_size), "batch": cfg.model.batch_size,
        "precision": str(trainer.precision), "parameters (M)": f"{counts['parameters_total'] / 1e6:.2f}",
        "trainable (M)": f"{counts['parameters_trainable'] / 1e6:.2f}", "train img/s": f"{rate(images, wait + step):.1f}",
        "data wait %": f"{100 * wait / (wait + step):.1f}", "fit s": f"{fit_seconds:.1f}",
        "infer img/s": f"{inference['inference_images_per_second'] or float('nan'):.1f}",
        "peak MiB": f"{peak['peak_memory_bytes'] / 2**20:.0f}",
    }


def markdown(rows: list[dict], errors: dict[str, str], header: str) -> str:
    """The results as a Markdown table under `header`, failed models listed after it."""
    lines = [header, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[column]) for column in COLUMNS) + " |" for row in rows]
    lines += [f"\n{model} failed: {error}" for model, error in errors.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS, help="conf/model/ names")
    parser.add_argument("--tiny", action="store_true", help="size=tiny, a tiny dataset and random weights (a CPU check)")
    parser.add_argument("--random-weights", action="store_true", help="random backbone weights in a temporary cache")
    parser.add_argument("--trainer", default="gpu" if torch.cuda.is_available() else "cpu", help="conf/trainer/ name")
    parser.add_argument("--n-train", type=int, help="training images (default 1000, the HDMAP size; --tiny: 40)")
    parser.add_argument("--n-test", type=int, help="test images per class (default 100; --tiny: 12)")
    parser.add_argument("--warmup", type=int, default=2, help="training batches left out of the rates")
    parser.add_argument("--train-batches", type=int, help="stop the epoch after this many batches (default: whole epoch)")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    parser.add_argument("--data", nargs="+", default=[], metavar="KEY=VALUE",
                        help="data settings, e.g. device_cache=true or pin_memory=false (the data wait they change)")
    args = parser.parse_args()
    args.random_weights |= args.tiny
    args.n_train = args.n_train or (40 if args.tiny else 1000)
    args.n_test = args.n_test or (12 if args.tiny else 100)
    cuda = torch.cuda.is_available() and args.trainer != "cpu"
    device = torch.cuda.get_device_name() if cuda else "CPU"
    peak = "torch.cuda.max_memory_allocated" if cuda else "the process's peak RSS"
    header = (f"{device}, torch {torch.__version__}, trainer={args.trainer}{', size=tiny' if args.tiny else ''}"
              f"{''.join(f', data.{setting}' for setting in args.data)}; "
              f"{args.n_train} training images, {2 * args.n_test} test images; peak MiB = {peak}")
    rows, errors = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.random_weights:
            use_random_weights(work / "hub")
        for model in args.models:
            try:
                rows.append(measure(model, args, work))
            except Exception as exc:  # one model failing (out of memory, missing weights) still reports the others
                traceback.print_exc()
                errors[model] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    table = markdown(rows, errors, header)
    print(table)
    if args.out:
        args.out.write_text(table)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
