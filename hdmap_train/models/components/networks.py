"""DRAEM's two sub-networks, the image sizes they take, and the score of their output.

The reconstructive network restores an image; the discriminative one segments the anomaly from the
image and its reconstruction (2 classes per pixel). Its encoder halves the resolution 5 times (the
reconstructive one 4 times), so height and width must be multiples of SIZE_MULTIPLE. The anomaly map
is P(anomalous) per pixel, softmax(logits)[:, 1], and the image score its maximum.
"""

import torch
from anomalib.models.image.draem.torch_model import DiscriminativeSubNetwork, ReconstructiveSubNetwork

from hdmap_train.errors import HdmapError

SIZE_MULTIPLE = 32


def draem_subnetworks(
    channels: int, reconstructive_width: int, discriminative_width: int, sspcab: bool = False
) -> tuple[ReconstructiveSubNetwork, DiscriminativeSubNetwork]:
    """(reconstructive: channels -> channels, discriminative: image + reconstruction -> 2 classes), built in that order."""
    reconstructive = ReconstructiveSubNetwork(
        in_channels=channels, out_channels=channels, base_width=reconstructive_width, sspcab=sspcab
    )
    discriminative = DiscriminativeSubNetwork(in_channels=2 * channels, out_channels=2, base_width=discriminative_width)
    return reconstructive, discriminative


def check_input_size(images: torch.Tensor) -> None:
    """DRAEM's networks need height and width divisible by 32."""
    height, width = images.shape[-2:]
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        msg = (
            f"DRAEM networks need image sizes divisible by {SIZE_MULTIPLE}, got {height}x{width}: set "
            f"model.image_size to e.g. [32,96] (HDMAP's 31x95, rounded up) or [128,128]."
        )
        raise HdmapError(msg)


def anomaly_map_and_score(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(anomaly map (B, H, W) = softmax(logits)[:, 1], image score (B,) = its maximum) of (B, 2, H, W) logits."""
    anomaly_map = torch.softmax(logits, dim=1)[:, 1]
    return anomaly_map, torch.amax(anomaly_map, dim=(-2, -1))
