"""The DRAEM loss with a focal alpha: anomalib's DraemLoss (L2 + 2*SSIM + focal) with alpha configurable.

anomalib's DraemLoss fixes kornia's focal alpha at 1, which weighs the anomalous class by 1 and the
normal class by 0: normal pixels never enter the focal term (the seed reported 50% accuracy with it).
"""

import torch
from anomalib.models.image.draem.loss import DraemLoss
from kornia.losses import FocalLoss


class DraemFocalLoss(DraemLoss):
    """L2(recon, clean) + 2*SSIM(recon, clean) + Focal(logits, mask); forward is DraemLoss.forward."""

    def __init__(self, focal_alpha: float = 0.9) -> None:
        """Build the three terms.

        Args:
            focal_alpha: weight of the anomalous class in the focal term; normal pixels get 1 - alpha
                (kornia's convention). 1.0 is anomalib's value and ignores normal pixels.
        """
        super().__init__()
        self.focal_loss = FocalLoss(alpha=focal_alpha, reduction="mean")

    def terms(
        self, clean: torch.Tensor, reconstruction: torch.Tensor, mask: torch.Tensor, logits: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The three terms by name: l2, ssim (already x2), focal."""
        return {
            "l2": self.l2_loss(reconstruction, clean),
            "ssim": 2 * self.ssim_loss(reconstruction, clean),
            "focal": self.focal_loss(logits, mask.squeeze(1).long()),
        }
