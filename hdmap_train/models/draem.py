"""DRAEM with configurable widths, a local anomaly source and a validation loss."""

from collections.abc import Sequence
from pathlib import Path

import torch
from anomalib.data import Batch
from anomalib.models import Draem
from anomalib.models.components import AnomalibModule
from anomalib.models.image.draem.torch_model import DraemModel

from hdmap_train.data.perlin import BatchedPerlinAnomalyGenerator
from hdmap_train.errors import HdmapError
from hdmap_train.models.components import DraemFocalLoss, draem_subnetworks
from hdmap_train.models.validation import ValidationLossMixin

_STATE_AFTER_DEFAULT_NETWORKS: dict[bytes, torch.Tensor] = {}  # torch CPU generator state before -> after


def default_draem_model() -> DraemModel:
    """A DraemModel (anomalib) whose networks the caller replaces, with torch's CPU generator advanced as building
    its default networks advances it (they draw 97 M initial weights), so that the networks built next get the
    initial weights they always had.

    Built for real once per generator state; from the same state again (a sweep's next job with the same seed)
    it is built on the meta device (no weights, 0.02 s instead of 0.4 s) and the generator set to the state the
    real build left.
    """
    before = torch.get_rng_state().numpy().tobytes()
    after = _STATE_AFTER_DEFAULT_NETWORKS.get(before)
    if after is None:
        model = DraemModel()
        _STATE_AFTER_DEFAULT_NETWORKS[before] = torch.get_rng_state()
        return model
    with torch.device("meta"):
        model = DraemModel()
    torch.set_rng_state(after)
    return model


class HDMAPDraem(ValidationLossMixin, Draem):
    """anomalib's DRAEM; widths, learning rate and anomaly source are arguments.

    Nothing is downloaded (anomalib's Draem would fetch DTD when its folder is missing). The synthetic
    anomalies are anomalib's, drawn for the whole batch on its device (hdmap_train.data.perlin).
    """

    def __init__(
        self,
        reconstructive_width: int = 128,
        discriminative_width: int = 64,
        beta: Sequence[float] = (0.1, 1.0),
        anomaly_source_dir: str | Path | None = None,
        learning_rate: float = 1e-4,
        lr_milestones: Sequence[int] = (400, 600),
        focal_alpha: float = 1.0,
        **components,
    ) -> None:
        """Build the augmenter, the networks and the loss.

        Args:
            reconstructive_width: base width of the reconstructive sub-network (paper: 128).
            discriminative_width: base width of the discriminative sub-network (paper: 64).
            beta: range of the Perlin blend factor of the synthetic anomalies.
            anomaly_source_dir: folder of texture images (e.g. a local copy of DTD); None = procedural
                Perlin noise textures.
            learning_rate: Adam learning rate.
            lr_milestones: MultiStepLR milestones (epochs), gamma 0.1.
            focal_alpha: kornia focal-loss alpha; anomalib's DRAEM uses 1.0, which gives normal pixels zero
                weight in the focal term (kept as the default for fidelity; 0.9 is what DRAEM-CutPaste uses).
            **components: pre_processor, post_processor, evaluator, visualizer (see AnomalibModule).
        """
        AnomalibModule.__init__(self, **components)  # not Draem.__init__: it downloads DTD
        if anomaly_source_dir is not None and not Path(anomaly_source_dir).is_dir():
            msg = f"model.module.anomaly_source_dir={anomaly_source_dir} is not a folder. Point it at texture images or set it to null."
            raise HdmapError(msg)
        self.save_hyperparameters(ignore=list(components))
        self.augmenter = BatchedPerlinAnomalyGenerator(anomaly_source_path=anomaly_source_dir, blend_factor=tuple(beta))
        self.model = default_draem_model()  # the generator as after anomalib's default networks; they are replaced
        self.model.reconstructive_subnetwork, self.model.discriminative_subnetwork = draem_subnetworks(
            3, reconstructive_width, discriminative_width
        )
        self.loss = DraemFocalLoss(focal_alpha)
        self.sspcab = False
        self.learning_rate = learning_rate
        self.lr_milestones = list(lr_milestones)

    def training_step(self, batch: Batch, *args, **kwargs) -> dict[str, torch.Tensor]:
        """The DRAEM step of anomalib; the loss is logged with the batch's size (the epoch mean weighs a short last batch by
        its images) and as a tensor (anomalib's loss.item() waited for the device every step).
        """
        del args, kwargs
        augmented_image, anomaly_mask = self.augmenter(batch.image)
        reconstruction, prediction = self.model(augmented_image)
        loss = self.loss(batch.image, reconstruction, anomaly_mask, prediction)
        self.log("train_loss", loss.detach(), on_epoch=True, prog_bar=True, logger=True, batch_size=len(batch.image))
        return {"loss": loss}

    def validation_loss(self, batch: Batch) -> torch.Tensor:
        """The DRAEM training loss (anomalib's) on the validation batch with seeded Perlin anomalies."""
        augmented, mask = self.augmenter(batch.image)
        reconstruction = self.model.reconstructive_subnetwork(augmented)
        prediction = self.model.discriminative_subnetwork(torch.cat([augmented, reconstruction], dim=1))
        return self.loss(batch.image, reconstruction, mask, prediction)

    def configure_optimizers(self):  # noqa: ANN201 - Lightning's optimizer/scheduler lists
        """Adam with MultiStepLR at lr_milestones."""
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.learning_rate)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=self.lr_milestones, gamma=0.1)
        return [optimizer], [scheduler]
