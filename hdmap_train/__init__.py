"""hdmap_train: Hydra-composed multi-domain anomaly detection training on HDMAP data."""

__version__ = "0.1.0"

import os
import warnings

# Offline at run time: the Hugging Face hub is read from the local cache only, unless the user
# explicitly sets HF_HUB_OFFLINE=0. Set before anything imports huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Deprecation notices from inside anomalib/timm are not actionable for users of hdmap_train.
for _module in ("timm", "anomalib"):
    warnings.filterwarnings("ignore", category=FutureWarning, module=_module)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=_module)
# Lightning's own use of torch's deprecated pytree LeafSpec: nothing a user of hdmap_train can change.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)

from hdmap_train import catalog as _catalog  # noqa: E402,F401

# The ${hdmap_source:} and ${hdmap_other_domains:} resolvers of conf/train.yaml and conf/domain/.
from hdmap_train import domains as _domains  # noqa: E402,F401

# The ${hdmap_job_dir:} resolver of conf/hydra/default.yaml, for every process that composes the configs.
from hdmap_train import job_names as _job_names  # noqa: E402,F401

# The ${hdmap_tracking_dir:} resolver of conf/logger/mlflow.yaml.
from hdmap_train import mlflow_log as _mlflow_log  # noqa: E402,F401
