"""DRAEM-SevNet: DRAEM with a severity head, trained on severity-scaled CutPaste faults."""

from collections.abc import Sequence

import torch
from anomalib.data import Batch
from anomalib.models.components import AnomalibModule
from lightning.pytorch.utilities.types import STEP_OUTPUT

from hdmap_train.data.cutpaste import SeverityCutPasteGenerator
from hdmap_train.errors import HdmapError
from hdmap_train.models.components import check_input_size
from hdmap_train.models.draem_sevnet.loss import SEVERITY_LOSSES, DraemSevNetLoss
from hdmap_train.models.draem_sevnet.torch_model import HEAD_MODES, POOLING_TYPES, SCORE_COMBINATIONS, DraemSevNetModel
from hdmap_train.models.validation import SyntheticFaultValidationMixin

OPTIMIZERS = ("adam", "adamw", "sgd")


class DraemSevNet(SyntheticFaultValidationMixin, AnomalibModule):
    """DRAEM-SevNet (seed defaults at 14e662c4, with the fixes noted below).

    Score: final_score = combination of mask_score (max of the anomaly map) and the normalised
    severity (simple_average, weighted_average with severity_weight_for_combination, or maximum).
    Loss: L2 + 2*SSIM + focal(focal_alpha) + severity_weight * (MSE or SmoothL1)(head, severity label).
    Fixes: validation runs in eval mode (the seed switched to train mode, updating BatchNorm on
    validation data); no [0, 1] clamp of faulted images only; patch ratio = width / height
    (landscape = wide); focal alpha configurable (see DraemSevNetLoss).
    Optimiser: adam (no weight decay), adamw (1e-4) or sgd (momentum 0.9, 1e-4); no scheduler.
    """

    def __init__(
        self,
        reconstructive_width: int = 128,
        discriminative_width: int = 64,
        channels: int = 3,
        severity_head_mode: str = "single_scale",
        severity_head_pooling_type: str = "gap",
        severity_head_hidden_dim: int = 128,
        severity_head_spatial_size: int = 4,
        severity_head_use_spatial_attention: bool = True,
        score_combination: str = "simple_average",
        severity_weight_for_combination: float = 0.5,
        patch_width_range: Sequence[int] = (20, 80),
        patch_ratio_range: Sequence[float] = (2.0, 4.0),
        patch_count: int = 1,
        anomaly_probability: float = 0.5,
        severity_max: float = 1.0,
        severity_weight: float = 0.5,
        severity_loss_type: str = "mse",
        focal_alpha: float = 0.9,
        optimizer: str = "adam",
        learning_rate: float = 1e-4,
        **components,
    ) -> None:
        """Check the choices, then build the fault generator, the network and the loss from their sub-configs.

        The arguments are the flat keys of conf/model/draem_sevnet.yaml (and the checkpoint's hyperparameters).

        Args:
            reconstructive_width: base width of the reconstructive sub-network (paper: 128).
            discriminative_width: base width of the discriminative sub-network (paper: 64).
            channels: 3 (the repeated channels, as in the seed) or 1 (channel 0 only).
            severity_head_mode: single_scale (act6) or multi_scale (act2..act6).
            severity_head_pooling_type: gap or spatial_aware.
            severity_head_hidden_dim: hidden width h of the head's MLP.
            severity_head_spatial_size: spatial_aware: pooled size s (s x s per scale).
            severity_head_use_spatial_attention: spatial_aware: an attention map per scale.
            score_combination: simple_average, weighted_average or maximum of mask score and severity.
            severity_weight_for_combination: weighted_average: (1 - w) * mask + w * severity.
            patch_width_range: fault patch width range in pixels; must stay below the image width.
            patch_ratio_range: fault patch width / height range (> 1 landscape, < 1 portrait).
            patch_count: patches per faulted image.
            anomaly_probability: share of training images that get a fault.
            severity_max: severity ~ U(0, severity_max); normalised severity = raw / severity_max.
            severity_weight: weight of the severity loss term.
            severity_loss_type: mse or smooth_l1.
            focal_alpha: focal-loss weight of the anomalous class (seed: 1.0, which ignores normal pixels).
            optimizer: adam, adamw or sgd.
            learning_rate: the optimiser's learning rate.
            **components: pre_processor, post_processor, evaluator, visualizer (see AnomalibModule).
        """
        super().__init__(**components)
        self.save_hyperparameters(ignore=list(components))
        choices = {
            "severity_head_mode": (severity_head_mode, HEAD_MODES),
            "severity_head_pooling_type": (severity_head_pooling_type, POOLING_TYPES),
            "score_combination": (score_combination, SCORE_COMBINATIONS),
            "severity_loss_type": (severity_loss_type, tuple(SEVERITY_LOSSES)),
            "optimizer": (optimizer, OPTIMIZERS),
            "channels": (channels, (1, 3)),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise HdmapError(f"model.module.{key}={value} is not one of {', '.join(map(str, allowed))}.")
        if not 0.0 <= focal_alpha <= 1.0:
            raise HdmapError(f"model.module.focal_alpha={focal_alpha} must lie in [0, 1].")
        self.generator = SeverityCutPasteGenerator(
            patch_width_range=patch_width_range, patch_ratio_range=patch_ratio_range, severity_max=severity_max,
            patch_count=patch_count, probability=anomaly_probability,
        )
        head = {
            "mode": severity_head_mode,
            "pooling": severity_head_pooling_type,
            "hidden_dim": severity_head_hidden_dim,
            "spatial_size": severity_head_spatial_size,
            "spatial_attention": severity_head_use_spatial_attention,
        }
        self.model = DraemSevNetModel(
            reconstructive_width=reconstructive_width, discriminative_width=discriminative_width, channels=channels,
            head=head, severity_max=severity_max, score_combination=score_combination,
            severity_weight_for_combination=severity_weight_for_combination,
        )
        self.loss = DraemSevNetLoss(severity_weight=severity_weight, severity_loss=severity_loss_type, focal_alpha=focal_alpha)
        self.optimizer_name = optimizer
        self.learning_rate = learning_rate

    def training_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """Fault the batch, run the networks; log and return the DRAEM + severity loss."""
        del args, kwargs
        check_input_size(batch.image)
        clean = batch.image[:, : self.model.channels]
        faults = self.generator(clean)
        reconstruction, logits, severity = self.model.networks(faults.images)
        terms = self.loss.sevnet_terms(clean, reconstruction, faults.masks, logits, severity, faults.amplitudes)
        loss = self.loss.total(terms)
        return self.log_training_loss(loss, terms, len(clean))

    def synthetic_validation(self, batch: Batch, faulted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, final scores) of the batch with severity-scaled faults in the `faulted` images."""
        check_input_size(batch.image)
        clean = batch.image[:, : self.model.channels]
        faults = self.generator(clean, faulted)
        reconstruction, logits, severity = self.model.networks(faults.images)
        loss = self.loss(clean, reconstruction, faults.masks, logits, severity, faults.amplitudes)
        return loss, self.model.summarize(reconstruction, logits, severity).final_score

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam (no weight decay), AdamW (1e-4) or SGD (momentum 0.9, 1e-4); no scheduler."""
        params = self.model.parameters()
        if self.optimizer_name == "adamw":
            return torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=1e-4)
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(params, lr=self.learning_rate, momentum=0.9, weight_decay=1e-4)
        return torch.optim.Adam(params, lr=self.learning_rate)
