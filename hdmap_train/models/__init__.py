"""Building anomalib models from the `model` config group (`build_model`).

baselines.py      anomalib models that only add a validation loss (FastFlow, Dinomaly, STFPM, ...)
draem.py          DRAEM with configurable widths and a local anomaly source
patchcore.py      PatchCore with a faster coreset sampler and timed fit phases
validation.py     the validation-loss and synthetic-fault validation (loss + AUROC) mixins
components/       parts shared by the DRAEM family (focal DRAEM loss, input-size check, map -> score)
draem_cutpaste/   DRAEM-CutPaste (lightning model + torch model)
draem_sevnet/     DRAEM-SevNet (lightning model, torch model with the severity head, loss)
"""

from contextlib import nullcontext

from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from torchvision.transforms.v2 import Normalize

from hdmap_train.errors import HdmapError
from hdmap_train.weights import random_initialisation, weight_files

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build_model(model_cfg: DictConfig) -> AnomalibModule:
    """Instantiate `model_cfg.module` with hdmap_train's components.

    Images arrive already resized by the datamodule, so the pre-processor only normalises (ImageNet
    statistics for pretrained backbones). Scores stay raw (no anomalib normalisation/thresholding):
    hdmap_train evaluates and thresholds on validation data itself. Pretrained weights must already be
    in the local cache (checked first, with a clear message when missing); `model.random_weights`
    (weights=random) builds every backbone with its random initial weights instead.
    """
    random = model_cfg.get("random_weights", False)
    weight_files(model_cfg)  # raises naming the missing file and the fix; nothing to check for random weights
    transform = Normalize(IMAGENET_MEAN, IMAGENET_STD) if model_cfg.imagenet_normalize else None
    try:
        with random_initialisation() if random else nullcontext():
            return instantiate(
            model_cfg.module,
                _convert_="all",  # plain lists in hyperparameters: checkpoints load with weights_only=True
                pre_processor=PreProcessor(transform=transform),
                post_processor=PostProcessor(enable_normalization=False, enable_thresholding=False),
                evaluator=False,
                visualizer=False,
            )
    except InstantiationException as exc:
        if isinstance(exc.__cause__, HdmapError):
            raise exc.__cause__ from None
        msg = f"Cannot build model '{model_cfg.name}' from conf/model/{model_cfg.name}.yaml: {exc}"
        raise HdmapError(msg) from exc
