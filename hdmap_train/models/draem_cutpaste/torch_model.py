"""1-channel DRAEM network for DRAEM-CutPaste (anomalib's DRAEM sub-networks, configurable widths)."""

import torch
from anomalib.data import InferenceBatch
from torch import nn

from hdmap_train.models.components import anomaly_map_and_score, draem_subnetworks


class DraemCutPasteModel(nn.Module):
    """Reconstructive (1 -> 1 channel) and discriminative (image + reconstruction, 2 -> 2 classes) networks.

    HDMAP maps are single-channel; the datamodule repeats them into 3 identical channels, so channel 0
    is used. Training mode returns (reconstruction, logits); eval mode returns anomalib's
    InferenceBatch with anomaly_map = softmax(logits)[:, 1] and pred_score = its maximum.
    """

    def __init__(self, reconstructive_width: int = 128, discriminative_width: int = 128, sspcab: bool = False) -> None:
        """Build both sub-networks.

        Args:
            reconstructive_width: base width of the reconstructive sub-network.
            discriminative_width: base width of the discriminative sub-network.
            sspcab: anomalib's SSPCAB block in the reconstructive encoder.
        """
        super().__init__()
        self.reconstructive_subnetwork, self.discriminative_subnetwork = draem_subnetworks(
            1, reconstructive_width, discriminative_width, sspcab=sspcab
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
        anomaly_map, score = anomaly_map_and_score(logits)
        return InferenceBatch(pred_score=score, anomaly_map=anomaly_map)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | InferenceBatch:
        """(reconstruction, logits) in training mode, anomalib's InferenceBatch in eval mode."""
        reconstruction, logits = self.reconstruct_and_segment(images)
        if self.training:
            return reconstruction, logits
        return self.predict(logits)
