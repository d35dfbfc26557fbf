"""Lightning callbacks of a run: the training history (kept across resumes), the divergence check, the config stamp
of every checkpoint, and the prediction collector.
"""

import logging
import math
import time

import lightning as L
import numpy as np
from anomalib.data import ImageBatch
from lightning.pytorch.callbacks import Callback

from hdmap_train.checkpoints import STAMP
from hdmap_train.errors import HdmapError
from hdmap_train.metrics import EXAMPLE_CATEGORIES, Example, Scores

log = logging.getLogger(__name__)


class TrainingHistory(Callback):
    """Per-epoch train_loss / val_loss means, training images seen, and fit time, kept across resumes; one log line
    per epoch.

    The state travels in every checkpoint (Lightning saves callback state), so a run resumed from
    last.ckpt reports the whole history and the total fit time of all its attempts.
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
        self.images_per_epoch: list[int] = []
        self.earlier_fit_seconds = 0.0  # fit time of the attempts before this one (from the checkpoint)
        self.attempts = 1
        self._started, self._stopped = time.perf_counter(), None
        self._images = 0
        self._epoch_started = self._started

    @property
    def fit_seconds(self) -> float:
        """Fit time of every attempt so far (up to the end of fit, once it ended)."""
        return self.earlier_fit_seconds + (self._stopped or time.perf_counter()) - self._started

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        del trainer, pl_module
        self._started, self._stopped = time.perf_counter(), None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        del trainer, pl_module
        self._stopped = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        del trainer, pl_module
        self._images = 0
        self._epoch_started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        del trainer, pl_module, outputs, batch_idx
        self._images += len(batch.image)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        del pl_module
        self.images_per_epoch.append(self._images)
        losses = []
        for name, values in self.history.items():
            value = trainer.callback_metrics.get(f"{name}_epoch", trainer.callback_metrics.get(name))
            if value is not None:
                values.append(float(value))
                losses.append(f"{name} {float(value):.5g}")
        log.info("Epoch %d/%d: %s | %d images | %.1f s", trainer.current_epoch + 1, trainer.max_epochs,
                 ", ".join(losses) or "no loss logged", self._images, time.perf_counter() - self._epoch_started)

    def state_dict(self) -> dict:
        return {"history": self.history, "images_per_epoch": self.images_per_epoch, "fit_seconds": self.fit_seconds,
                "attempts": self.attempts}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = {name: list(values) for name, values in state_dict["history"].items()}
        self.images_per_epoch = list(state_dict["images_per_epoch"])
        self.earlier_fit_seconds = float(state_dict["fit_seconds"])
        self.attempts = int(state_dict["attempts"]) + 1


class DivergenceCheck(Callback):
    """Fail the run at the end of an epoch whose logged loss (training or validation) is not finite.

    It runs before the checkpoint callback (Lightning calls ModelCheckpoint last), so a diverged epoch is
    never saved, and the run ends failed instead of being early-stopped as if it had converged.
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        del pl_module
        for name, value in trainer.callback_metrics.items():
            if "loss" in name and not math.isfinite(float(value)):
                raise HdmapError(f"training diverged at epoch {trainer.current_epoch + 1} ({name} {float(value)}): lower "
                                 "the learning rate (model.module.learning_rate).")


class ConfigStamp(Callback):
    """Stamp every checkpoint with the run's config identity (hdmap_train.checkpoints.config_stamp)."""

    def __init__(self, stamp: dict) -> None:
        self.stamp = stamp

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        del trainer, pl_module
        checkpoint[STAMP] = self.stamp


class PredictionCollector(Callback):
    """Gathers scores of every predict dataloader and the grid examples of `example_names`.

    `names[i]` names dataloader i. Per example name and category only `n_examples` images are kept,
    updated batch by batch (streaming top-k), so memory does not grow with the test set.
    """

    def __init__(self, names: list[str], example_names: list[str], n_examples: int = 4) -> None:
        self.names = names
        self.n_examples = n_examples
        self._parts: dict[str, list[tuple[np.ndarray, np.ndarray, list[str]]]] = {name: [] for name in names}
        self.examples: dict[str, dict[str, list[Example]]] = {
            name: {category: [] for category in EXAMPLE_CATEGORIES} for name in example_names
        }

    def on_predict_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: ImageBatch, batch: ImageBatch,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        del trainer, pl_module, batch, batch_idx
        name = self.names[dataloader_idx]
        scores = outputs.pred_score.detach().float().cpu().reshape(-1).numpy()
        labels = outputs.gt_label.detach().cpu().reshape(-1).numpy().astype(int)
        paths = [str(p) for p in outputs.image_path]
        self._parts[name].append((scores, labels, paths))
        if name in self.examples:
            for category, (label, sign) in EXAMPLE_CATEGORIES.items():
                self._keep_best(self.examples[name][category], outputs, scores, labels, paths, label, sign)

    def _keep_best(
        self, kept: list[Example], outputs: ImageBatch, scores: np.ndarray, labels: np.ndarray, paths: list[str],
        label: int, sign: int,
    ) -> None:
        """Merge this batch's images of `label` into `kept`, keeping the n_examples with the largest sign*score."""
        pool: list[tuple[float, Example | int]] = [(sign * e.score, e) for e in kept]
        pool += [(sign * float(scores[i]), i) for i in np.flatnonzero(labels == label)]
        pool.sort(key=lambda item: item[0], reverse=True)
        kept[:] = [
            entry if isinstance(entry, Example) else _example(outputs, entry, scores, labels, paths)
            for _, entry in pool[: self.n_examples]
        ]

    def scores(self, name: str) -> Scores:
        """All scores of dataloader `name`; HdmapError if the model produced non-finite scores."""
        parts = self._parts[name]
        if not parts:
            raise RuntimeError(f"No predictions were collected for '{name}'.")
        scores = np.concatenate([p[0] for p in parts])
        if not np.isfinite(scores).all():
            raise HdmapError(f"The model produced {int((~np.isfinite(scores)).sum())} non-finite anomaly scores on "
                             f"'{name}' (training diverged): lower the learning rate (model.module.learning_rate).")
        return Scores(scores, np.concatenate([p[1] for p in parts]), [path for p in parts for path in p[2]])


def _example(outputs: ImageBatch, index: int, scores: np.ndarray, labels: np.ndarray, paths: list[str]) -> Example:
    """Copy one image (first channel) and its anomaly map to the CPU."""
    maps = outputs.anomaly_map
    return Example(
        score=float(scores[index]),
        label=int(labels[index]),
        path=paths[index],
        image=outputs.image[index, 0].detach().float().cpu().numpy().copy(),
        anomaly_map=None if maps is None else maps[index].detach().float().cpu().reshape(maps.shape[-2:]).numpy().copy(),
    )
