"""DRAEM-CutPaste: 1-channel DRAEM trained on additive CutPaste faults (hdmap_train.data.cutpaste)."""

from hdmap_train.models.draem_cutpaste.lightning_model import DraemCutPaste
from hdmap_train.models.draem_cutpaste.torch_model import DraemCutPasteModel

__all__ = ["DraemCutPaste", "DraemCutPasteModel"]
