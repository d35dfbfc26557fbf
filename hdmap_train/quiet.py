"""What a newcomer need not learn to ignore: the lines of Lightning and anomalib that say nothing about this run.

Dropped (each is either advertising, a duplicate of hdmap_train's own line, or about a choice hdmap_train makes
on purpose):
- Lightning's "💡 Tip: ..." lines (litlogger, litmodels) and "TPU available: False";
- Lightning's own console handler, which printed "INFO: Seed set to 42" a second time beside the run's log line;
- "The following callbacks returned in `LightningModule.configure_callbacks` will override ...: PostProcessor,
  PreProcessor" (anomalib's models always do this);
- anomalib's "ckpt_path is not provided. Model weights will not be loaded." right after hdmap_train says it
  predicts with the weights in memory;
- the warnings "`configure_optimizers` returned `None`" (memory-bank models have no optimiser) and "Found N
  module(s) in eval mode at the start of training" (frozen pretrained backbones are in eval mode on purpose).
Everything else (warnings included) is shown as before. `install()` is idempotent.
"""

import logging
import warnings

RANK_ZERO = ("💡 Tip:", "TPU available:", "The following callbacks returned in `LightningModule.configure_callbacks`")
# Lightning's rank_zero_info logs through whichever of these loggers its packages set last.
DROPPED_LINES = {
    **dict.fromkeys(("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                     "lightning_fabric.utilities.rank_zero", "lightning_utilities.core.rank_zero"), RANK_ZERO),
    "anomalib.engine.engine": ("ckpt_path is not provided",),
}
DROPPED_WARNINGS = (r"`LightningModule.configure_optimizers` returned `None`", r"Found \d+ module\(s\) in eval mode")


class _DropLines(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def install() -> None:
    """Add the filters (once) and let Lightning's loggers print through the root logger only."""
    for name, starts in DROPPED_LINES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines(starts))
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):  # its own StreamHandler: every line twice once the root logs too
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True
    for message in DROPPED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
