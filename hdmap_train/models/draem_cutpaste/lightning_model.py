"""DRAEM-CutPaste: 1-channel DRAEM trained on additive CutPaste faults (the seed paper's proposed model)."""

from collections.abc import Sequence

import torch
from anomalib.data import Batch
from anomalib.models.components import AnomalibModule
from lightning.pytorch.utilities.types import STEP_OUTPUT

from hdmap_train.data.cutpaste import CutPasteGenerator
from hdmap_train.errors import HdmapError
from hdmap_train.models.components import DraemFocalLoss, check_input_size
from hdmap_train.models.draem_cutpaste.torch_model import DraemCutPasteModel
from hdmap_train.models.validation import SyntheticFaultValidationMixin


class DraemCutPaste(SyntheticFaultValidationMixin, AnomalibModule):
    """DRAEM (1 channel) + additive CutPaste faults + focal loss with alpha; score = max of the anomaly map."""

    def __init__(
        self,
        reconstructive_width: int = 128,
        discriminative_width: int = 128,
        sspcab: bool = False,
        cut_w_range: Sequence[int] = (2, 127),
        cut_h_range: Sequence[int] = (4, 8),
        amplitude_range: Sequence[float] = (0.0, 1.0),
        probability: float = 0.5,
        normalize_patch: bool = False,
        focal_alpha: float = 0.9,
        learning_rate: float = 5e-4,
        weight_decay: float = 0.01,
        lr_step_size: int | None = None,
        lr_gamma: float = 0.1,
        **components,
    ) -> None:
        """Build the fault generator, the network and the loss.

        Args:
            reconstructive_width: base width of the reconstructive sub-network (paper: 128).
            discriminative_width: base width of the discriminative sub-network (paper: 128).
            sspcab: anomalib's SSPCAB block in the reconstructive encoder (its extra loss is not used).
            cut_w_range: CutPaste patch width range in pixels (hdmap_train.data.cutpaste.CutPasteGenerator).
            cut_h_range: CutPaste patch height range in pixels.
            amplitude_range: range of the fault amplitude a_fault the patch is multiplied by.
            probability: share of training images that get a fault.
            normalize_patch: divide the patch by its max |value| before scaling.
            focal_alpha: focal-loss weight of the anomalous class (normal pixels get 1 - alpha).
            learning_rate: AdamW learning rate.
            weight_decay: AdamW weight decay.
            lr_step_size: StepLR period in epochs; None = constant rate.
            lr_gamma: StepLR factor.
            **components: pre_processor, post_processor, evaluator, visualizer (see AnomalibModule).
        """
        super().__init__(**components)
        self.save_hyperparameters(ignore=list(components))
        if not 0.0 <= focal_alpha <= 1.0:
            raise HdmapError(f"model.module.focal_alpha={focal_alpha} must lie in [0, 1] (seed default 0.9).")
        self.generator = CutPasteGenerator(
            cut_w_range=cut_w_range, cut_h_range=cut_h_range, amplitude_range=amplitude_range,
            probability=probability, normalize_patch=normalize_patch,
        )
        self.model = DraemCutPasteModel(reconstructive_width, discriminative_width, sspcab=sspcab)
        self.loss = DraemFocalLoss(focal_alpha)
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.lr_step_size = lr_step_size
        self.lr_gamma = lr_gamma

    def training_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """Fault channel 0 of the batch, reconstruct and segment it; log and return the DRAEM loss."""
        del args, kwargs
        check_input_size(batch.image)
        clean = batch.image[:, :1]
        faults = self.generator(clean)
        reconstruction, logits = self.model.reconstruct_and_segment(faults.images)
        terms = self.loss.terms(clean, reconstruction, faults.masks, logits)
        loss = torch.stack(list(terms.values())).sum()
        return self.log_training_loss(loss, terms, len(clean))

    def synthetic_validation(self, batch: Batch, faulted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(DRAEM loss, image scores) of the batch with CutPaste faults in the `faulted` images."""
        check_input_size(batch.image)
        clean = batch.image[:, :1]
        faults = self.generator(clean, faulted)
        reconstruction, logits = self.model.reconstruct_and_segment(faults.images)
        return self.loss(clean, reconstruction, faults.masks, logits), self.model.predict(logits).pred_score

    def configure_optimizers(self):  # noqa: ANN201 - Lightning's optimizer/scheduler lists
        """AdamW, with StepLR when lr_step_size is set."""
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        if self.lr_step_size is None:
            return optimizer
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.lr_step_size, gamma=self.lr_gamma)
        return [optimizer], [scheduler]
