"""Validation metrics for models that train by gradient descent, on held-out normal images.

Lightning runs validation in eval mode without gradients, so BatchNorm running statistics and dropout
are untouched by validation. Anything a validation metric needs that is random (synthetic anomalies)
is drawn from a fixed seed per batch (`seeded`), so the metrics are comparable between epochs, without
disturbing the training random stream.

ValidationLossMixin (anomalib baselines, plain DRAEM): anomalib's DRAEM, Dinomaly and the other
baselines log only `train_loss`; the mixin adds `val_loss`, computed by the model's
`validation_loss(batch)`.

SyntheticFaultValidationMixin (DRAEM-CutPaste, DRAEM-SevNet): the validation split holds only normal
images, so an AUROC needs anomalies: every other validation image (global position 0, 2, 4, ... in the
fixed validation order) gets a synthetic fault from the model's own generator. The same images get the
same faults every epoch, so `val_loss` and `val_image_AUROC` are comparable between epochs. Only
validation_step injects faults; prediction (the validation threshold, the test sets) scores the clean
images.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from anomalib import LearningType
from anomalib.data import Batch
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torchmetrics.functional.classification import binary_auroc

from hdmap_train.errors import HdmapError

VALIDATION_SEED = 1234  # + the batch index: the seed of each validation batch's random draws

@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with torch's generators (CPU, and `device` if CUDA) seeded, then restore them."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


class ValidationLossMixin:
    """Put before the anomalib class in the bases: logs `val_loss`, then runs the usual validation step."""

    validation_seed = VALIDATION_SEED

    def validation_loss(self, batch: Batch) -> torch.Tensor:
        """The training objective evaluated on a validation batch (eval mode, no gradients)."""
        raise NotImplementedError

    def validation_step(self, batch: Batch, batch_idx: int = 0, *args, **kwargs) -> STEP_OUTPUT:
        with seeded(self.validation_seed + batch_idx, batch.image.device):
            loss = self.validation_loss(batch)
        self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch.image))
        return super().validation_step(batch, batch_idx, *args, **kwargs)


class SyntheticFaultValidationMixin:
    """Put before AnomalibModule in the bases; the model implements `synthetic_validation`.

    Logs `val_loss` (the training objective on the faulted validation batch) and, at the end of the
    epoch, `val_image_AUROC` (image scores of faulted vs clean validation images). The models are
    one-class, trained from scratch on their synthetic faults.
    """

    validation_seed = VALIDATION_SEED

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        return {"gradient_clip_val": 0, "num_sanity_val_steps": 0}

    @property
    def learning_type(self) -> LearningType:
        return LearningType.ONE_CLASS

    def synthetic_validation(self, batch: Batch, faulted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, image anomaly scores (B,)) after adding faults to the images where `faulted` (B,) is True."""
        raise NotImplementedError

    def log_training_loss(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], batch_size: int) -> dict:
        """Log train_loss and each term as train_<name>_loss; return Lightning's training-step output."""
        self.log("train_loss", loss, on_epoch=True, prog_bar=True, batch_size=batch_size)
        for name, value in terms.items():
            self.log(f"train_{name}_loss", value, on_step=False, on_epoch=True, batch_size=batch_size)
        return {"loss": loss}

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._validation_scores: list[torch.Tensor] = []
        self._validation_labels: list[torch.Tensor] = []

    def validation_step(self, batch: Batch, batch_idx: int = 0, *args, **kwargs) -> None:
        del args, kwargs
        seen = sum(len(labels) for labels in self._validation_labels)
        faulted = (torch.arange(len(batch.image)) + seen) % 2 == 0
        with seeded(self.validation_seed + batch_idx, batch.image.device):
            loss, scores = self.synthetic_validation(batch, faulted)
        self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch.image))
        self._validation_scores.append(scores.detach().float().cpu())
        self._validation_labels.append(faulted.long())

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        labels = torch.cat(self._validation_labels)
        if len(labels) < 2:
            msg = (
                f"Validation AUROC needs at least 2 validation images (one gets a synthetic fault), got {len(labels)}. "
                "Raise data.val_fraction or add training images."
            )
            raise HdmapError(msg)
        auroc = binary_auroc(torch.cat(self._validation_scores), labels)
        self.log("val_image_AUROC", auroc, prog_bar=True)
