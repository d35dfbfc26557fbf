"""The sweep summary, from the job folders' metrics.json, written into the sweep directory:

- summary.csv: one row per job (collect); summary_stats.csv: mean, std, n, 95% t-interval per condition x
  source x evaluated domain x subgroup x metric (statistics); results_long.csv: one row per job x domain x
  subgroup x metric with provenance (long_table);
- summary.md (markdown), summary.tex (the paper table, tables), summary.png and, for sweeps over several
  source domains, transfer_matrix.png (figures).

Written at the end of every multirun (hdmap_train.hydra_callbacks.SweepSummary), and rebuilt for any sweep
directory, finished or not, by

    python -m hdmap_train.report dir=multirun/2026-11-22/10-00-00
"""

from pathlib import Path

import pandas as pd

from hdmap_train.pictures import save_picture
from hdmap_train.sweep.collect import collect
from hdmap_train.sweep.figures import summary_figure, transfer_figure
from hdmap_train.sweep.long_table import long_table
from hdmap_train.sweep.markdown import summary_markdown
from hdmap_train.sweep.statistics import repeat_statistics
from hdmap_train.sweep.tables import paper_latex

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
