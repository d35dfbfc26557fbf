"""Per-model cost at paper size on a GPU: steady-state training and inference images/s, peak memory, data wait.

    .venv/bin/python bench/gpu.py [--models draem draem_cutpaste patchcore dinomaly] [--out gpu.md]
    .venv/bin/python bench/gpu.py --tiny                                # CPU check of the script, all four models
    .venv/bin/python bench/gpu.py --data device_cache=true             # images kept on the GPU (vs pinned loaders)
    .venv/bin/python bench/gpu.py --models draem --precision bf16-mixed --channels-last --tf32
    .venv/bin/python bench/gpu.py --models draem --profile             # one training step split into its parts

Each model is composed as `python -m hdmap_train model=<m> trainer=gpu` composes it (conf/model/<m>.yaml,
paper size; --tiny: size=tiny; trainer=cpu without CUDA), on the built-in synthetic dataset generated into
a temporary folder (--n-train normal training images of domain A, --n-test images per test class), and
trained through its datamodule (`trainer.fit(model, datamodule=...)`, as a run does). For each model:

    train img/s    steady state: one training epoch without its first --warmup batches and without the first
                   batch of every image shape (cuDNN autotunes each new shape under `benchmark: true`; the last,
                   partial batch of an epoch is such a shape): images / (data wait + step)
    new-shape s    the extra seconds of those first batches of a shape over a steady batch's time (autotuning,
                   CUDA start-up of the first step, first-call kernel compilation)
    data wait %    share of the steady time spent waiting for the batch (DataLoader and the copy to the device)
    fit s          the whole epoch with its end (PatchCore's coreset selection, PaDiM's Gaussian)
    infer img/s    the source test set after a full warm-up pass: images / model step time (data excluded)
    peak MiB       torch.cuda.max_memory_allocated over training and inference, reset per model
                   (without CUDA: the process's peak RSS since the model's start)

Steps are synchronised with the device at both ends (hdmap_train.efficiency.StepTimer). --profile adds a
second table: the mean milliseconds of one steady training step per part (data wait, synthetic anomalies,
forward, backward, optimizer, the rest: Lightning's host work between them), each part's ends synchronised;
and torch.profiler's operator table of --profile-steps steps next to --out. --random-weights (implied by
--tiny) writes seeded random backbone weights into a temporary Hugging Face cache, so no pretrained file is
needed; the weights' values do not change the timings. The Markdown tables go to stdout and, with --out, to a file.
"""

import argparse
import gc
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import lightning as L
import torch
from huggingface_hub import constants
from hydra import compose, initialize_config_dir
from lightning import Trainer
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from hdmap_train.data.datamodule import build_datamodule
from hdmap_train.efficiency import PeakMemory, StepTimer, parameter_counts, synchronize
from hdmap_train.models import build_model
from hdmap_train.weights import write_random_weights

CONF = Path(__file__).resolve().parents[1] / "conf"
MODELS = ["draem", "draem_cutpaste", "patchcore", "dinomaly"]
COLUMNS = ["model", "image size", "batch", "precision", "parameters (M)", "trainable (M)", "train img/s", "new-shape s",
           "data wait %", "fit s", "infer img/s", "peak MiB"]
PHASES = ["data wait", "synthesis", "forward", "backward", "optimizer", "rest"]


def steady_state(steps: list[tuple[float, float, int, tuple]], warmup: int) -> dict:
    """Steady training rate of StepTimer.train_steps: the first `warmup` steps and the first step of every image shape
    are left out of the rate; what those first-of-a-shape steps took beyond a steady step of their size is reported.
    """
    seen: set[tuple] = set()
    steady, first = [], []
    for index, (wait, step, images, shape) in enumerate(steps):
        (first if shape not in seen else steady if index >= warmup else []).append((wait, step, images))
        seen.add(shape)
    if not steady:
        return {"images_per_second": float("nan"), "data_wait_share": float("nan"), "new_shape_seconds": float("nan")}
    wait, step, images = (sum(column) for column in zip(*steady, strict=True))
    per_image = (wait + step) / images
    extra = sum(max(0.0, w + s - per_image * n) for w, s, n in first)
    return {"images_per_second": images / (wait + step), "data_wait_share": wait / (wait + step), "new_shape_seconds": extra}


class _Timed:
    """A generator object whose calls go through `call` (its other attributes as they are)."""

    def __init__(self, inner, call) -> None:
        self._inner, self._call = inner, call

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


class PhaseTimer(Callback):
    """Milliseconds of each part of every training step (ends synchronised with the device), and torch.profiler
    around steps `start` to `start + count` when `profiler` is given.
    """

    def __init__(self, model: torch.nn.Module, start: int, count: int, profiler: torch.profiler.profile | None) -> None:
        self.parts: list[dict[str, float]] = []
        self.start, self.count, self.profiler, self.profiled = start, count, profiler, False
        self._marks: dict[str, float] = {}
        self._synthesis = 0.0
        for name in ("augmenter", "generator"):  # DRAEM's Perlin anomalies / the CutPaste family's faults
            if hasattr(model, name):
                synthesis = getattr(model, name)
                if isinstance(synthesis, torch.nn.Module):
                    synthesis.forward = self._timed(synthesis.forward, model)  # Module.__call__ calls the instance's forward
                else:
                    setattr(model, name, _Timed(synthesis, self._timed(synthesis.__call__, model)))

    def _timed(self, call, model: torch.nn.Module):
        def timed(*args, **kwargs):
            begin = self._now(model)
            with torch.profiler.record_function("synthesis"):
                out = call(*args, **kwargs)
            self._synthesis += self._now(model) - begin
            return out
        return timed

    @staticmethod
    def _now(model: torch.nn.Module) -> float:
        synchronize(next(model.parameters()).device)
        return time.perf_counter()

    def _mark(self, name: str, pl_module: L.LightningModule) -> None:
        self._marks[name] = self._now(pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark("end", pl_module)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.profiler is not None and batch_idx == self.start:
            self.profiler.start()
            self.profiled = True
        self._synthesis = 0.0
        self._mark("start", pl_module)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self._mark("backward", pl_module)

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark("backward_end", pl_module)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        self._mark("optimizer", pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        now, marks = self._now(pl_module), self._marks
        if "backward" in marks:  # models that optimise (memory-bank models have no backward)
            parts = {"data wait": marks["start"] - marks["end"], "synthesis": self._synthesis,
                     "forward": marks["backward"] - marks["start"] - self._synthesis,
                     "backward": marks["backward_end"] - marks["backward"], "optimizer": now - marks["optimizer"],
                     "rest": marks["optimizer"] - marks["backward_end"]}
            self.parts.append({name: 1000 * seconds for name, seconds in parts.items()})
        self._marks = {"end": now}
        if self.profiled and batch_idx == self.start + self.count - 1:
            self._stop_profiler()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_profiler()  # an epoch shorter than the profiled steps

    def _stop_profiler(self) -> None:
        if self.profiled and self.profiler is not None:
            self.profiler.stop()
            self.profiler = None

    def mean_parts(self, skip: int) -> dict[str, float]:
        """Mean milliseconds per part over the steps after the first `skip`."""
        steady = self.parts[skip:] or self.parts
        return {name: sum(p[name] for p in steady) / len(steady) for name in PHASES} if steady else {}


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


def measure(model_name: str, args: argparse.Namespace, work: Path) -> tuple[dict, dict]:
    """Train one epoch and predict the source test set twice; the table row of `model_name` and its step parts (ms)."""
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
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    timer = StepTimer(training=True)
    profiler = None
    if args.profile:
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        profiler = torch.profiler.profile(activities=activities)
    phases = PhaseTimer(model, args.warmup, args.profile_steps, profiler)
    trainer = Trainer(**{
        **OmegaConf.to_container(cfg.trainer, resolve=True), **model.trainer_arguments,
        **({"precision": args.precision} if args.precision else {}),
        "max_epochs": 1, "limit_train_batches": args.train_batches or 1.0, "limit_val_batches": 0, "num_sanity_val_steps": 0,
        "logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
        "callbacks": [timer, *([phases] if args.profile else [])],
    })
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)  # the datamodule's hook puts the batches on the device as a run does
    fit_seconds = time.perf_counter() - start
    steady = steady_state(timer.train_steps, args.warmup)
    trainer.predict(model, datamodule=datamodule, return_predictions=False)  # warm-up: every batch shape, cuDNN autotuning
    timer.predict_steps.clear()
    trainer.predict(model, datamodule=datamodule, return_predictions=False)
    inference = timer.inference([1])  # the source test set (0 is the validation set)
    counts = parameter_counts(model, trainer.optimizers)
    peak = memory.read(trainer.strategy.root_device)
    if phases.profiled:
        sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
        averages = profiler.key_averages()
        table = averages.table(sort_by=sort, row_limit=25)  # the labelled region below, whatever its rank here
        table += "".join(f"\nregion {event.key}: {event.count} calls, CPU total {event.cpu_time_total / 1000:.1f} ms"
                         for event in averages if event.key == "synthesis")
        (args.out or Path("gpu.md")).with_suffix(f".{model_name}.profile.txt").write_text(table)
    row = {
        "model": model_name, "image size": "x".join(str(s) for s in cfg.model.image_size), "batch": cfg.model.batch_size,
        "precision": str(trainer.precision), "parameters (M)": f"{counts['parameters_total'] / 1e6:.2f}",
        "trainable (M)": f"{counts['parameters_trainable'] / 1e6:.2f}", "train img/s": f"{steady['images_per_second']:.1f}",
        "new-shape s": f"{steady['new_shape_seconds']:.2f}", "data wait %": f"{100 * steady['data_wait_share']:.1f}",
        "fit s": f"{fit_seconds:.1f}", "infer img/s": f"{inference['inference_images_per_second'] or float('nan'):.1f}",
        "peak MiB": f"{peak['peak_memory_bytes'] / 2**20:.0f}",
    }
    return row, phases.mean_parts(args.warmup)


def markdown(rows: list[dict], parts: dict[str, dict], errors: dict[str, str], header: str) -> str:
    """The results as a Markdown table under `header`, the step parts (--profile) and the failed models after it."""
    lines = [header, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[column]) for column in COLUMNS) + " |" for row in rows]
    if any(parts.values()):
        lines += ["", "One steady training step, ms (each part's ends synchronised with the device):", "",
                  "| model | " + " | ".join(PHASES) + " | total |", "|" + "---|" * (len(PHASES) + 2)]
        lines += [f"| {model} | " + " | ".join(f"{ms[name]:.2f}" for name in PHASES) + f" | {sum(ms.values()):.2f} |"
                  for model, ms in parts.items() if ms]
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
    parser.add_argument("--precision", help="trainer precision instead of the model's, e.g. bf16-mixed or 32-true")
    parser.add_argument("--channels-last", action="store_true", help="the model's weights in channels_last memory format")
    parser.add_argument("--tf32", action="store_true", help="TF32 matrix multiplications (cuDNN convolutions use TF32 by default)")
    parser.add_argument("--profile", action="store_true", help="split a training step into its parts; torch.profiler table")
    parser.add_argument("--profile-steps", type=int, default=3, help="training steps under torch.profiler (after --warmup)")
    args = parser.parse_args()
    args.random_weights |= args.tiny
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    args.n_train = args.n_train or (40 if args.tiny else 1000)
    args.n_test = args.n_test or (12 if args.tiny else 100)
    cuda = torch.cuda.is_available() and args.trainer != "cpu"
    device = torch.cuda.get_device_name() if cuda else "CPU"
    peak = "torch.cuda.max_memory_allocated" if cuda else "the process's peak RSS"
    options = [*(["size=tiny"] if args.tiny else []), *(f"data.{setting}" for setting in args.data),
               *([f"precision={args.precision}"] if args.precision else []), *(["channels_last"] if args.channels_last else []),
               *(["tf32"] if args.tf32 else [])]
    header = (f"{device}, torch {torch.__version__}, trainer={args.trainer}{''.join(f', {option}' for option in options)}; "
              f"{args.n_train} training images, {2 * args.n_test} test images; peak MiB = {peak}")
    rows, parts, errors = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.random_weights:
            use_random_weights(work / "hub")
        for model in args.models:
            try:
                row, parts[model] = measure(model, args, work)
                rows.append(row)
            except Exception as exc:  # one model failing (out of memory, missing weights) still reports the others
                traceback.print_exc()
                errors[model] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    table = markdown(rows, parts, errors, header)
    print(table)
    if args.out:
        args.out.write_text(table)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
