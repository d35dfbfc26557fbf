"""The sweep summary, from the job folders' metrics.json, written into the sweep directory:

- summary.csv: one row per job (collect); summary_stats.csv: mean, std, n, 95% t-interval per condition x
  source x evaluated domain x subgroup x metric (statistics); results_long.csv: one row per job x domain x
  subgroup x metric with provenance (long_table);
- summary.md (markdown), summary.tex (the paper table, tables), summary.png and, for sweeps over several
  source domains, transfer_matrix.png (figures).

Written at the end of every multirun (SweepSummary, a Hydra callback), and rebuilt for any sweep
directory, finished or not, by

    python -m hdmap_train.report multirun/2026-11-22/10-00-00
"""

import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hdmap_train.background_pictures import wait_for_pictures
from hdmap_train.plots import save_picture
from hdmap_train.sweep.collect import collect
from hdmap_train.sweep.figures import summary_figure, transfer_figure
from hdmap_train.sweep.long_table import long_table
from hdmap_train.sweep.markdown import summary_markdown
from hdmap_train.sweep.statistics import repeat_statistics
from hdmap_train.sweep.tables import paper_latex

log = logging.getLogger(__name__)
SUMMARY_FILES = ("summary.csv", "summary_stats.csv", "results_long.csv", "summary.md", "summary.tex", "summary.png",
                 "transfer_matrix.png")


def write_summary(sweep_dir: Path) -> pd.DataFrame:
    """Write the SUMMARY_FILES into sweep_dir (transfer_matrix.png only with several source domains); returns summary.csv's table."""
    sweep = collect(sweep_dir)
    long = long_table(sweep)
    conditions = sweep.table[["condition", "model", *sweep.condition_columns]].dropna(subset=["condition"])
    stats = repeat_statistics(long, sweep.table)
    stats = conditions.drop_duplicates("condition").merge(stats, on="condition", how="right")
    sweep.table.to_csv(sweep_dir / "summary.csv", index=False)
    stats.to_csv(sweep_dir / "summary_stats.csv", index=False)
    long.to_csv(sweep_dir / "results_long.csv", index=False)
    (sweep_dir / "summary.md").write_text(summary_markdown(sweep, stats, sweep_dir))
    (sweep_dir / "summary.tex").write_text(paper_latex(stats))
    save_picture(summary_figure(sweep.table), sweep_dir / "summary.png")
    if (transfer := transfer_figure(long)) is not None:
        save_picture(transfer, sweep_dir / "transfer_matrix.png")
    return sweep.table


class SweepSummary(Callback):
    """At the end of a multirun, in the launching process: once every job's pictures are drawn, write the sweep
    summary, exit 1 if a job failed.

    Hydra turns exceptions raised in callbacks into warnings, so a failed sweep ends with SystemExit(1).
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        del kwargs
        sweep_dir = Path(config.hydra.sweep.dir)
        wait_for_pictures()  # the jobs whose pictures a helper process still draws
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
