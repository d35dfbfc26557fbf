"""Parts shared by the DRAEM family (plain DRAEM, DRAEM-CutPaste, DRAEM-SevNet).

loss.py      DraemFocalLoss: anomalib's DRAEM loss (L2 + 2*SSIM + focal) with a configurable focal alpha
networks.py  the reconstructive + discriminative sub-networks, the input-size check, and the
             anomaly map -> image score step of the discriminative output
"""

from hdmap_train.models.components.loss import DraemFocalLoss
from hdmap_train.models.components.networks import SIZE_MULTIPLE, anomaly_map_and_score, check_input_size, draem_subnetworks

__all__ = ["SIZE_MULTIPLE", "DraemFocalLoss", "anomaly_map_and_score", "check_input_size", "draem_subnetworks"]
