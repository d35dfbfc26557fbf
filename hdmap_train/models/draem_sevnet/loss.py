"""DRAEM-SevNet loss: the DRAEM loss (L2 + 2*SSIM + focal) plus a weighted severity regression term."""

import torch
from torch import nn

from hdmap_train.models.components import DraemFocalLoss

SEVERITY_LOSSES = {"mse": nn.MSELoss, "smooth_l1": nn.SmoothL1Loss}


class DraemSevNetLoss(DraemFocalLoss):
    """L2(recon, clean) + 2*SSIM(recon, clean) + Focal(logits, mask) + severity_weight * L_sev(head, severity).

    L_sev is MSE or SmoothL1 between the raw head output and the raw severity label (0 for clean images).
    """

    def __init__(self, severity_weight: float = 0.5, severity_loss: str = "mse", focal_alpha: float = 0.9) -> None:
        """Build the DRAEM terms and the severity term.

        Args:
            severity_weight: weight of the severity term in the total.
            severity_loss: "mse" or "smooth_l1".
            focal_alpha: see DraemFocalLoss. The seed used anomalib's DraemLoss, alpha = 1, which with
                kornia's class weighting gives normal pixels no weight; 0.9 is the DRAEM-CutPaste default.
        """
        super().__init__(focal_alpha)
        if severity_loss not in SEVERITY_LOSSES:
            raise ValueError(f"severity_loss must be one of {sorted(SEVERITY_LOSSES)}, got {severity_loss!r}")
        self.severity_weight = severity_weight
        self.severity_loss = SEVERITY_LOSSES[severity_loss]()

    def sevnet_terms(
        self,
        clean: torch.Tensor,
        reconstruction: torch.Tensor,
        mask: torch.Tensor,
        logits: torch.Tensor,
        severity: torch.Tensor,
        severity_label: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """l2, ssim (x2), focal and the unweighted severity term, by name."""
        return {**self.terms(clean, reconstruction, mask, logits), "severity": self.severity_loss(severity, severity_label)}

    def forward(self, *outputs: torch.Tensor) -> torch.Tensor:
        """The total loss of `sevnet_terms(*outputs)` (clean, reconstruction, mask, logits, severity, severity_label)."""
        return self.total(self.sevnet_terms(*outputs))

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """l2 + ssim + focal + severity_weight * severity."""
        return terms["l2"] + terms["ssim"] + terms["focal"] + self.severity_weight * terms["severity"]
