"""Hydra callbacks (conf/hydra/default.yaml: hydra.callbacks)."""

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hdmap_train.report import write_summary

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    """At the end of a multirun, in the launching process: write the sweep summary, exit 1 if a job failed.

    Hydra turns exceptions raised in callbacks into warnings, so a failed sweep ends with SystemExit(1).
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        del kwargs
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            table = write_summary(sweep_dir)
        except Exception:  # Hydra would only warn: a sweep without its summary must not look successful
            log.exception("Could not write the summary of %s", sweep_dir)
            sys.exit(1)
        log.info("Sweep summary: %s", sweep_dir / "summary.md")
        unfinished = table[table["status"] != "success"]
        if len(unfinished):
            for row in unfinished.itertuples():
                log.error("%s %s: %s", row.status, row.job, row.error)
            log.error("%d of %d jobs did not succeed; see %s", len(unfinished), len(table), sweep_dir / "summary.md")
            sys.exit(1)
