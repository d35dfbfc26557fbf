"""DRAEM-CutPaste: 1-channel DRAEM trained on additive CutPaste faults."""

from hdmap_train.models.draem_cutpaste.generator import CutPasteGenerator, SyntheticFaults
from hdmap_train.models.draem_cutpaste.lightning_model import DraemCutPaste
from hdmap_train.models.draem_cutpaste.loss import DraemCutPasteLoss
from hdmap_train.models.draem_cutpaste.torch_model import DraemCutPasteModel

__all__ = ["CutPasteGenerator", "DraemCutPaste", "DraemCutPasteLoss", "DraemCutPasteModel", "SyntheticFaults"]
