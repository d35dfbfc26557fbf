"""What a model costs: parameters, timed training and prediction steps, peak memory, memory-bank size.

A run records `run_efficiency` in metrics.json (`efficiency`); bench/gpu.py uses the same pieces per model.

Peak memory is `torch.cuda.max_memory_allocated` when the model ran on CUDA (tensors only, not the caching
allocator's reserve or the CUDA context), else the process's peak resident set size (`resource.getrusage`
ru_maxrss). PeakMemory() starts both anew: the CUDA counters once CUDA runs in this process (a fresh
process starts at zero anyway), the RSS high-water mark through /proc/self/clear_refs (Linux); where that
cannot be written the RSS peak covers the whole process (a reused sweep worker's earlier jobs too), and
`peak_memory_source` says which.
"""

import resource
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

CLEAR_REFS = Path("/proc/self/clear_refs")


class PeakMemory:
    """Peak memory since construction: CUDA's allocated peak and the process's peak RSS."""

    def __init__(self) -> None:
        if torch.cuda.is_initialized():  # never starts CUDA itself (a fresh process starts at zero)
            for index in range(torch.cuda.device_count()):
                torch.cuda.reset_peak_memory_stats(index)
        try:
            CLEAR_REFS.write_text("5")  # resets the RSS high-water mark that ru_maxrss reports
            self.rss_since = "job_start"
        except OSError:
            self.rss_since = "process_start"

    def read(self, device: torch.device) -> dict:
        """peak_memory_bytes of `device` (CUDA) or of the process (RSS), its source, and peak_rss_bytes."""
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        if device.type == "cuda":
            peak, source = torch.cuda.max_memory_allocated(device), "cuda_max_memory_allocated"
        else:
            peak, source = rss, f"max_rss_since_{self.rss_since}"
        return {"peak_memory_bytes": int(peak), "peak_memory_source": source, "peak_rss_bytes": int(rss)}


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously); nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(Callback):
    """Seconds and images of every prediction batch (per dataloader) and, with `training`, every training batch.

    Both ends of a step are synchronised with the device. A training batch's `wait` runs from the end of the
    previous batch (or the epoch start) to its start: the DataLoader and the copy to the device; `step` is
    the training step (forward, backward, optimiser). A prediction step is the model's forward and
    post-processing, data loading excluded. Prediction-only timing (the default) adds nothing to training.
    """

    def __init__(self, training: bool = False) -> None:
        """Time prediction batches, and training batches too when `training`.

        Args:
            training: also time training batches (one synchronisation per batch end and start).
        """
        self.training = training
        self.train_steps: list[tuple[float, float, int, tuple]] = []  # (wait, step, images, image shape)
        self.predict_steps: dict[int, list[tuple[float, int]]] = {}  # dataloader index -> [(step, images)]
        self._mark = self._wait = 0.0

    def _now(self, pl_module: L.LightningModule) -> float:
        synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.training:
            self._mark = self._now(pl_module)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.training:
            now = self._now(pl_module)
            self._wait, self._mark = now - self._mark, now

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.training:
            now = self._now(pl_module)
            self.train_steps.append((self._wait, now - self._mark, len(batch.image), tuple(batch.image.shape)))
            self._mark = now

    def on_predict_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int,
                               dataloader_idx: int = 0) -> None:
        self._mark = self._now(pl_module)

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        step = self._now(pl_module) - self._mark
        self.predict_steps.setdefault(dataloader_idx, []).append((step, len(batch.image)))

    def inference(self, dataloaders: list[int] | None = None) -> dict:
        """inference_images, _seconds and _images_per_second over the given dataloaders' batches (default: all)."""
        steps = [s for index, part in self.predict_steps.items() if dataloaders is None or index in dataloaders for s in part]
        seconds, images = sum(s for s, _ in steps), sum(n for _, n in steps)
        return {"inference_images": images, "inference_seconds": round(seconds, 4),
                "inference_images_per_second": round(images / seconds, 2) if seconds > 0 else None}


def parameter_counts(model: torch.nn.Module, optimizers: list[torch.optim.Optimizer]) -> dict:
    """parameters_total of the model and parameters_trainable: those an optimiser updates (none for memory-bank models).

    anomalib leaves requires_grad on in backbones no optimiser touches (PatchCore's), so the optimisers decide.
    """
    optimised = {id(p) for optimizer in optimizers for group in optimizer.param_groups for p in group["params"]}
    parameters = list(model.parameters())  # shared tensors once
    return {"parameters_total": sum(p.numel() for p in parameters),
            "parameters_trainable": sum(p.numel() for p in parameters if p.requires_grad and id(p) in optimised)}


def _tensor_size(tensor: torch.Tensor) -> dict:
    return {"shape": list(tensor.shape), "bytes": tensor.numel() * tensor.element_size(), "dtype": str(tensor.dtype).removeprefix("torch.")}


def stored_features(model: torch.nn.Module) -> dict:
    """The fitted feature store of anomalib's memory-bank models (None where a model has none).

    memory_bank: PatchCore's coreset (model.model.memory_bank), rows x dims and bytes; gaussian: PaDiM's
    per-position mean and inverse covariance (model.model.gaussian), their shapes and bytes together.
    """
    inner = getattr(model, "model", None)
    bank = getattr(inner, "memory_bank", None)
    memory_bank = None
    if isinstance(bank, torch.Tensor) and bank.ndim == 2 and bank.numel():
        size = _tensor_size(bank)
        memory_bank = {"rows": size["shape"][0], "dims": size["shape"][1], "bytes": size["bytes"], "dtype": size["dtype"]}
    gaussian = getattr(inner, "gaussian", None)
    parts = [getattr(gaussian, name, None) for name in ("mean", "inv_covariance")]
    stats = None
    if all(isinstance(p, torch.Tensor) and p.numel() for p in parts):
        mean, inverse = (_tensor_size(p) for p in parts)
        stats = {"mean_shape": mean["shape"], "inv_covariance_shape": inverse["shape"], "bytes": mean["bytes"] + inverse["bytes"],
                 "dtype": mean["dtype"]}
    return {"memory_bank": memory_bank, "gaussian": stats}


def run_efficiency(model: L.LightningModule, trainer: L.Trainer, memory: PeakMemory) -> dict:
    """metrics.json `efficiency` after prediction: parameters, test-set inference rate, peak memory, feature store.

    The inference rate covers the test sets only: every predict dataloader but the first (validation, see
    hdmap_train.engine.predict_all), timed by the trainer's StepTimer.
    """
    timer = next(c for c in trainer.callbacks if isinstance(c, StepTimer))
    tests = [index for index in timer.predict_steps if index > 0]
    device = trainer.strategy.root_device
    return {"device": str(device), "precision": str(trainer.precision), "cpu_threads": torch.get_num_threads(),
            **parameter_counts(model, trainer.optimizers),
            **timer.inference(tests), **memory.read(device), **stored_features(model)}
