"""DRAEM-SevNet: DRAEM with a severity head, trained on severity-scaled CutPaste faults (hdmap_train.data.cutpaste)."""

from hdmap_train.models.draem_sevnet.lightning_model import DraemSevNet
from hdmap_train.models.draem_sevnet.loss import DraemSevNetLoss
from hdmap_train.models.draem_sevnet.torch_model import DraemSevNetModel, SeverityHead, SevNetOutput, combine_scores

__all__ = ["DraemSevNet", "DraemSevNetLoss", "DraemSevNetModel", "SevNetOutput", "SeverityHead", "combine_scores"]
