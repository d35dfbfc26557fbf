"""1-channel DRAEM network for DRAEM-CutPaste (anomalib's DRAEM sub-networks, configurable widths)."""

import torch
from anomalib.data import InferenceBatch
from anomalib.models.image.draem.torch_model import DiscriminativeSubNetwork, ReconstructiveSubNetwork
from torch import nn

# The discriminative encoder halves the resolution 5 times (the reconstructive one 4 times).
SIZE_MULTIPLE = 32


class DraemCutPasteModel(nn.Module):
    """Reconstructive (1 -> 1 channel) and discriminative (image + reconstruction, 2 -> 2 classes) networks.

    HDMAP maps are single-channel; the datamodule repeats them into 3 identical channels, so channel 0
    is used. Training mode returns (reconstruction, logits); eval mode returns anomalib's
    InferenceBatch with anomaly_map = softmax(logits)[:, 1] and pred_score = its maximum.
    """

    def __init__(self, reconstructive_width: int = 128, discriminative_width: int = 128, sspcab: bool = False) -> None:
        super().__init__()
        self.reconstructive_subnetwork = ReconstructiveSubNetwork(
            in_channels=1, out_channels=1, base_width=reconstructive_width, sspcab=sspcab
        )
        self.discriminative_subnetwork = DiscriminativeSubNetwork(
            in_channels=2, out_channels=2, base_width=discriminative_width
        )

    def reconstruct_and_segment(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction (B,1,H,W), logits (B,2,H,W)) of channel 0 of (B,C,H,W) images, in any mode."""
        image = images[:, :1]
        reconstruction = self.reconstructive_subnetwork(image)
        logits = self.discriminative_subnetwork(torch.cat([image, reconstruction], dim=1))
        return reconstruction, logits

    @staticmethod
    def predict(logits: torch.Tensor) -> InferenceBatch:
        """Anomaly map = P(anomalous) per pixel; image score = max of the map."""
        anomaly_map = torch.softmax(logits, dim=1)[:, 1]
        return InferenceBatch(pred_score=torch.amax(anomaly_map, dim=(-2, -1)), anomaly_map=anomaly_map)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | InferenceBatch:
        reconstruction, logits = self.reconstruct_and_segment(images)
        if self.training:
            return reconstruction, logits
        return self.predict(logits)
