"""Validation loss and validation AUROC from synthetic faults injected into held-out normal images.

The validation split holds only normal images, so an AUROC needs anomalies: every other validation
image (global position 0, 2, 4, ... in the fixed validation order) gets a synthetic fault from the
model's own generator, drawn from a fixed seed per batch. The same images get the same faults every
epoch, so `val_loss` and `val_image_AUROC` are comparable between epochs. Lightning runs validation
in eval mode without gradients: BatchNorm statistics and dropout are untouched.

Only validation_step injects faults. Prediction (the validation threshold, the test sets) scores the
clean images.
"""

from typing import Any

import torch
from anomalib import LearningType
from anomalib.data import Batch
from torchmetrics.functional.classification import binary_auroc

from hdmap_train.errors import HdmapError
from hdmap_train.models.validation_loss import seeded


class SyntheticFaultValidationMixin:
    """Put before AnomalibModule in the bases; the model implements `synthetic_validation`.

    Logs `val_loss` (the training objective on the faulted validation batch) and, at the end of the
    epoch, `val_image_AUROC` (image scores of faulted vs clean validation images). The models are
    one-class, trained from scratch on their synthetic faults.
    """

    validation_seed = 1234

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
