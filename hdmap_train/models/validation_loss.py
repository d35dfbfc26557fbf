"""Validation loss on held-out normal images, for models that train by gradient descent.

anomalib's DRAEM and Dinomaly log only `train_loss`. The mixin adds `val_loss`, computed by the
model's `validation_loss(batch)` while Lightning has the module in eval mode and gradients off, so
BatchNorm running statistics and dropout are untouched by validation. Anything the loss needs that is
random (synthetic anomalies) is drawn from a fixed seed per batch, so val_loss is comparable between
epochs, without disturbing the training random stream.
"""

import torch
from anomalib.data import Batch
from lightning.pytorch.utilities.types import STEP_OUTPUT


class ValidationLossMixin:
    """Put before the anomalib class in the bases: logs `val_loss`, then runs the usual validation step."""

    validation_seed = 1234

    def validation_loss(self, batch: Batch) -> torch.Tensor:
        """The training objective evaluated on a validation batch (eval mode, no gradients)."""
        raise NotImplementedError

    def validation_step(self, batch: Batch, batch_idx: int = 0, *args, **kwargs) -> STEP_OUTPUT:
        devices = [batch.image.device] if batch.image.is_cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.validation_seed + batch_idx)
            loss = self.validation_loss(batch)
        self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch.image))
        return super().validation_step(batch, batch_idx, *args, **kwargs)
