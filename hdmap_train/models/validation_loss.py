"""Validation loss on held-out normal images, for models that train by gradient descent.

anomalib's DRAEM and Dinomaly log only `train_loss`. The mixin adds `val_loss`, computed by the
model's `validation_loss(batch)` while Lightning has the module in eval mode and gradients off, so
BatchNorm running statistics and dropout are untouched by validation. Anything the loss needs that is
random (synthetic anomalies) is drawn from a fixed seed per batch, so val_loss is comparable between
epochs, without disturbing the training random stream.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from anomalib.data import Batch
from lightning.pytorch.utilities.types import STEP_OUTPUT


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with torch's generators (CPU, and `device` if CUDA) seeded, then restore them."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


class ValidationLossMixin:
    """Put before the anomalib class in the bases: logs `val_loss`, then runs the usual validation step."""

    validation_seed = 1234

    def validation_loss(self, batch: Batch) -> torch.Tensor:
        """The training objective evaluated on a validation batch (eval mode, no gradients)."""
        raise NotImplementedError

    def validation_step(self, batch: Batch, batch_idx: int = 0, *args, **kwargs) -> STEP_OUTPUT:
        with seeded(self.validation_seed + batch_idx, batch.image.device):
            loss = self.validation_loss(batch)
        self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch.image))
        return super().validation_step(batch, batch_idx, *args, **kwargs)
