"""Dinomaly with a validation loss (the cosine reconstruction loss on held-out normal images)."""

import torch
from anomalib.data import Batch
from anomalib.models import Dinomaly
from torch.nn import functional as F

from hdmap_train.models.validation_loss import ValidationLossMixin


class HDMAPDinomaly(ValidationLossMixin, Dinomaly):
    """anomalib's Dinomaly; val_loss = mean over layers of 1 - cos(encoder, decoder) features.

    This is the value of anomalib's CosineHardMiningLoss; its hard mining only reweights gradients,
    so it does not change the loss value and is not needed without a backward pass.
    """

    def validation_loss(self, batch: Batch) -> torch.Tensor:
        image = batch.image.type(next(self.model.encoder.parameters()).dtype)
        encoder, decoder = self.model.get_encoder_decoder_outputs(image)
        losses = [
            1 - F.cosine_similarity(en.flatten(1), de.flatten(1)).mean() for en, de in zip(encoder, decoder, strict=True)
        ]
        return torch.stack(losses).mean()
