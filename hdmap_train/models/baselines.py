"""anomalib baselines with a validation loss, a fixed input size and offline-only weights.

Each class is a thin subclass of the anomalib model. `validation_loss` evaluates the model's own
training objective on a held-out normal batch while Lightning keeps the module in eval mode (see
ValidationLossMixin): where anomalib's torch model returns its training outputs only when
``self.training`` is set, `training_branch` sets that flag on the top-level torch model alone, so
every sub-module (BatchNorm, dropout, frozen backbones) stays in eval mode.

Memory-bank models (PaDiM, PatchCore) have no loss and use anomalib's classes directly (PatchCore
through hdmap_train.models.patchcore); DRAEM and its variants live in their own modules.

Weights that anomalib would download from a URL (EfficientAD's teacher and its ImageNette penalty
images, UniNet's torchvision teachers) are never downloaded: they must already be on disk, or the
model fails at build time with an HdmapError naming the file and how to provide it.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import einops
import torch
from anomalib.data import Batch
from anomalib.models import (
    Cflow,
    Dinomaly,
    EfficientAd,
    Fastflow,
    Ganomaly,
    ReverseDistillation,
    Stfpm,
    Supersimplenet,
    UniNet,
)
from anomalib.models.image.cflow.utils import get_logp, positional_encoding_2d
from anomalib.models.image.efficient_ad.lightning_model import WEIGHTS_DOWNLOAD_INFO
from torch import nn
from torch.nn import functional as F

from hdmap_train.errors import HdmapError
from hdmap_train.models.validation import ValidationLossMixin


@contextmanager
def training_branch(model: nn.Module) -> Iterator[None]:
    """Let `model.forward` take its training branch while all its sub-modules stay in eval mode."""
    was_training = model.training
    model.training = True
    try:
        yield
    finally:
        model.training = was_training


class FixedInputSize:
    """`input_size` from the configured image size (hdmap_train's pre-processor does not resize)."""

    def __init__(self, image_size: Sequence[int], **kwargs) -> None:
        """Keep the image size, then build the anomalib model.

        Args:
            image_size: (height, width) of the images the datamodule delivers.
            **kwargs: the anomalib model's arguments.
        """
        self.image_size = tuple(image_size)  # set first: anomalib's __init__ may read input_size
        super().__init__(**kwargs)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.image_size


class HDMAPFastflow(FixedInputSize, ValidationLossMixin, Fastflow):
    """FastFlow; val_loss = its negative log-likelihood loss on validation images."""

    def validation_loss(self, batch: Batch) -> torch.Tensor:
        with training_branch(self.model):
            hidden_variables, jacobians = self.model(batch.image)
        return self.loss(hidden_variables, jacobians)


class HDMAPReverseDistillation(FixedInputSize, ValidationLossMixin, ReverseDistillation):
    """Reverse Distillation; val_loss = the cosine encoder/decoder feature loss."""

    def validation_loss(self, batch: Batch) -> torch.Tensor:
        with training_branch(self.model):
            features = self.model(batch.image)
        return self.loss(*features)


class HDMAPStfpm(ValidationLossMixin, Stfpm):
    """STFPM; val_loss = the teacher/student feature-pyramid loss."""

    def validation_loss(self, batch: Batch) -> torch.Tensor:
        with training_branch(self.model):
            teacher_features, student_features = self.model(batch.image)
        return self.loss(teacher_features, student_features)


class HDMAPGanomaly(FixedInputSize, ValidationLossMixin, Ganomaly):
    """GANomaly; val_loss = the generator loss (adversarial + contextual + encoder terms, weighted).

    anomalib builds the networks for `input_size` but pads every batch to a square power of two, so the
    image size must already be one (otherwise scores come out per spatial position, not per image).
    """

    def __init__(self, image_size: Sequence[int], **kwargs) -> None:
        """Check the image size, then build anomalib's Ganomaly.

        Args:
            image_size: (height, width), square and a power of two.
            **kwargs: anomalib Ganomaly's arguments.
        """
        height, width = image_size
        if height != width or height & (height - 1):
            msg = f"GANomaly needs a square power-of-two image size, got model.image_size={list(image_size)}: use e.g. [256,256]."
            raise HdmapError(msg)
        super().__init__(image_size=image_size, **kwargs)

    def training_step(self, batch: Batch, *args, **kwargs) -> dict[str, torch.Tensor]:
        """Anomalib's step; its generator loss is also logged as train_loss (the epoch lines, train_loss_per_epoch)."""
        losses = super().training_step(batch, *args, **kwargs)
        self.log("train_loss", losses["generator_loss"].detach(), on_step=False, on_epoch=True, batch_size=len(batch.image))
        return losses

    def validation_loss(self, batch: Batch) -> torch.Tensor:
        with training_branch(self.model):
            padded, fake, latent_i, latent_o = self.model(batch.image)
        pred_real, _ = self.model.discriminator(padded)
        pred_fake, _ = self.model.discriminator(fake)
        return self.generator_loss(latent_i, latent_o, padded, fake, pred_real, pred_fake)


class HDMAPSupersimplenet(FixedInputSize, ValidationLossMixin, Supersimplenet):
    """SuperSimpleNet; val_loss = its segmentation + classification loss on seeded synthetic feature noise.

    Its Perlin masks use scales up to 32 on the stride-8 feature map, so images must be at least 256 px
    in both dimensions.
    """

    def __init__(self, image_size: Sequence[int], **kwargs) -> None:
        """Check the image size, then build anomalib's Supersimplenet.

        Args:
            image_size: (height, width), both at least 256.
            **kwargs: anomalib Supersimplenet's arguments.
        """
        if min(image_size) < 256:
            msg = f"SuperSimpleNet needs images of at least 256x256, got model.image_size={list(image_size)}: use e.g. [256,256]."
            raise HdmapError(msg)
        super().__init__(image_size=image_size, **kwargs)

    def validation_loss(self, batch: Batch) -> torch.Tensor:
        with training_branch(self.model):
            anomaly_map, anomaly_score, masks, labels = self.model(
                images=batch.image, masks=batch.gt_mask, labels=batch.gt_label
            )
        return self.loss(pred_map=anomaly_map, pred_score=anomaly_score, target_mask=masks, target_label=labels)


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


class HDMAPCflow(ValidationLossMixin, Cflow):
    """CFlow; val_loss = mean of -logsigmoid(log-likelihood per dimension) over every feature position.

    Training evaluates the same quantity on random fiber batches (one optimiser step each); here every
    position of the validation images is evaluated once, with the decoders in eval mode.
    """

    def validation_loss(self, batch: Batch) -> torch.Tensor:
        activations = self.model.encoder(batch.image)
        losses = []
        for layer, decoder in zip(self.model.pool_layers, self.model.decoders, strict=True):
            features = activations[layer]
            batch_size, dims, height, width = features.shape
            encoding = positional_encoding_2d(self.model.condition_vector, height, width).to(features)
            condition = einops.repeat(encoding, "c h w -> (b h w) c", b=batch_size)
            embedding = einops.rearrange(features, "b c h w -> (b h w) c")
            p_u, log_jac_det = decoder(embedding, [condition])
            log_prob = get_logp(dims, p_u, log_jac_det) / dims
            losses.append(-F.logsigmoid(log_prob))
        return torch.cat(losses).mean()


class HDMAPUniNet(FixedInputSize, ValidationLossMixin, UniNet):
    """UniNet; val_loss = its contrastive + classification loss.

    Its torchvision teachers load ImageNet weights from the torch hub cache, checked offline by build_model
    (hdmap_train.weights.require_torchvision).
    """

    def validation_loss(self, batch: Batch) -> torch.Tensor:
        with training_branch(self.model):
            return self.model(images=batch.image, masks=batch.gt_mask, labels=batch.gt_label)


class HDMAPEfficientAd(ValidationLossMixin, EfficientAd):
    """EfficientAD with a local teacher file and local penalty images; val_loss = loss_st + loss_ae + loss_stae.

    The validation loss uses the first of the penalty images as its fixed penalty batch. `random_teacher`
    (weights=random): the teacher keeps its seeded random initial weights and the penalty images are seeded noise.
    """

    PENALTY_NOISE_IMAGES = 8  # random_teacher: how many noise images stand in for ImageNette

    def __init__(
        self, image_size: Sequence[int], teacher_weights: str | Path | None, imagenet_dir: str | Path | None,
        random_teacher: bool = False, **kwargs
    ) -> None:
        """Check the image size and both local assets, then build anomalib's EfficientAd.

        Args:
            image_size: checked only (the autoencoder's encoder needs at least 256 px per side).
            teacher_weights: the pretrained teacher state dict (pretrained_teacher_<small|medium>.pth from
                anomalib's efficientad_pretrained_weights.zip).
            imagenet_dir: an ImageFolder tree of natural images (anomalib uses ImageNette) for the
                student's penalty term.
            random_teacher: no local asset: a random teacher and noise penalty images (teacher_weights and
                imagenet_dir must then be null).
            **kwargs: anomalib EfficientAd's other arguments (model_size, lr, ...).
        """
        if min(image_size) < 256:
            msg = f"EfficientAD's autoencoder needs images of at least 256x256, got model.image_size={list(image_size)}."
            raise HdmapError(msg)
        self.random_teacher = random_teacher
        if random_teacher:
            if teacher_weights is not None or imagenet_dir is not None:
                msg = "EfficientAD's random_teacher takes no local asset: set model.module.teacher_weights=null and imagenet_dir=null."
                raise HdmapError(msg)
            super().__init__(**kwargs)
            return
        size = str(kwargs.get("model_size", "small"))
        if teacher_weights is None or not Path(teacher_weights).is_file():
            msg = (
                f"EfficientAD needs its pretrained teacher: model.module.teacher_weights={teacher_weights} is not a "
                f"file. Training never downloads. To fix, download {WEIGHTS_DOWNLOAD_INFO.url} on a machine with "
                f"network, unzip it and set model.module.teacher_weights=<dir>/efficientad_pretrained_weights/"
                f"pretrained_teacher_{size}.pth."
            )
            raise HdmapError(msg)
        if imagenet_dir is None or not Path(imagenet_dir).is_dir():
            msg = (
                f"EfficientAD needs natural images for its penalty loss: model.module.imagenet_dir={imagenet_dir} is "
                f"not a folder. Training never downloads. To fix, point it at an ImageFolder tree (class "
                f"sub-folders of images), e.g. an unpacked ImageNette (imagenette2)."
            )
            raise HdmapError(msg)
        super().__init__(imagenet_dir=imagenet_dir, **kwargs)
        self.teacher_weights = Path(teacher_weights)

    def prepare_pretrained_model(self) -> None:
        """Load the teacher from the local file (anomalib's would download it); a random teacher stays as built."""
        if not self.random_teacher:
            state = torch.load(self.teacher_weights, map_location=self.device, weights_only=True)
            self.model.teacher.load_state_dict(state)

    def prepare_imagenette_data(self, image_size: tuple[int, int] | torch.Size) -> None:
        """The penalty images: anomalib's ImageFolder of `imagenet_dir`, or seeded uniform noise for a random teacher."""
        if not self.random_teacher:
            super().prepare_imagenette_data(image_size)
            return
        noise = torch.rand(self.PENALTY_NOISE_IMAGES, 3, *image_size, generator=torch.Generator().manual_seed(0))
        dataset = torch.utils.data.TensorDataset(noise, torch.zeros(len(noise), dtype=torch.long))
        self.imagenet_loader = torch.utils.data.DataLoader(dataset, batch_size=self.batch_size, shuffle=True)
        self.imagenet_iterator = iter(self.imagenet_loader)

    def validation_loss(self, batch: Batch) -> torch.Tensor:
        penalty_image = self.imagenet_loader.dataset[0][0][None].to(batch.image.device)
        _, distance_st = self.model.compute_student_teacher_distance(batch.image)
        return torch.stack(self.model.compute_losses(batch.image, penalty_image, distance_st)).sum()
