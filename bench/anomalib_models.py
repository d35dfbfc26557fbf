"""The tiny DRAEM and PatchCore of bench/sweep.py as classes `anomalib benchmark` can build by name.

anomalib's get_model imports a dotted class_path only from anomalib.models (a whitelist), so importing
this module adds TinyDraem and TinyPatchcore to anomalib.models; run as a script it is anomalib's CLI
with them added:

    python bench/anomalib_models.py benchmark --config <config.yaml>   # model: {class_path: TinyDraem}

The benchmark config has no trainer section and cannot pass a pre-processor, and its result table
needs the same init_args keys in every job, so the sizes are fixed here; bench/sweep.py imports them
for hdmap_train's model=tiny_draem and model=tiny_patchcore (same widths, input size, batch, epochs).
"""

import anomalib.models
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from torchvision.transforms.v2 import Compose, Normalize, Resize

from hdmap_train.models import IMAGENET_MEAN, IMAGENET_STD
from hdmap_train.models.draem import HDMAPDraem
from hdmap_train.models.patchcore import HDMAPPatchcore

IMAGE_SIZE = [32, 96]  # [height, width]
BATCH_SIZE = 8
DRAEM_EPOCHS = 1  # PatchCore fits in one epoch anyway
DRAEM = {"reconstructive_width": 8, "discriminative_width": 4}
PATCHCORE = {"backbone": "resnet18", "coreset_sampling_ratio": 0.1, "coreset_sampler": "blocked"}


class TinyDraem(HDMAPDraem):
    """hdmap_train's DRAEM (procedural Perlin textures, no download) at the tiny widths, one epoch."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**DRAEM | kwargs)

    @property
    def trainer_arguments(self) -> dict:
        return {**super().trainer_arguments, "max_epochs": DRAEM_EPOCHS}

    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | None = None) -> PreProcessor:
        del image_size
        return PreProcessor(transform=Resize(IMAGE_SIZE, antialias=True))

    def configure_post_processor(self) -> PostProcessor:
        """Raw scores, as hdmap_train (anomalib's min-max normalisation clamps to [0, 1], which can tie scores)."""
        return PostProcessor(enable_normalization=False)


class TinyPatchcore(HDMAPPatchcore):
    """hdmap_train's PatchCore (anomalib's, with the same blocked coreset sampler) on IMAGE_SIZE inputs (no 256 resize / 224 crop), ImageNet-normalised as in hdmap_train."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**PATCHCORE | kwargs)

    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | None = None, center_crop_size: tuple[int, int] | None = None) -> PreProcessor:
        del image_size, center_crop_size
        return PreProcessor(transform=Compose([Resize(IMAGE_SIZE, antialias=True), Normalize(IMAGENET_MEAN, IMAGENET_STD)]))

    def configure_post_processor(self) -> PostProcessor:
        return PostProcessor(enable_normalization=False)


anomalib.models.TinyDraem = TinyDraem
anomalib.models.TinyPatchcore = TinyPatchcore

if __name__ == "__main__":
    from anomalib.cli.cli import main

    main()
