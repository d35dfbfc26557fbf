"""summary.md: job counts, the conditions, conditions x source domains, the paper table, domain-shift numbers,
what the jobs cost and every metric as mean ± std (n) over repeats, every job, and the failed, missing and
unreadable jobs.
"""

from pathlib import Path

import pandas as pd

from hdmap_train.results import COST_METRICS, DOMAIN_METRICS, SHIFT_METRICS, SUMMARY, Metric, shown
from hdmap_train.sweep.collect import OVERRIDE_PREFIX, Sweep
from hdmap_train.sweep.statistics import AVERAGE, mean_std
from hdmap_train.sweep.tables import markdown_table, paper_markdown

PROBLEMS = (("failed", "Failed jobs"), ("missing", "Missing results (running, killed, or stopped before the run)"),
            ("unreadable", "Unreadable results (corrupt or truncated metrics.json)"))


def number(value: float | None, digits: int = 3) -> str:
    """A table cell: the value rounded, or '-' when there is none."""
    return "-" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def text(value: object) -> str:
    """A Markdown table cell of any value ('-' when missing, '|' escaped)."""
    return "-" if value is None or (not isinstance(value, list | dict) and pd.isna(value)) else str(value).replace("|", "\\|")


def status_counts(table: pd.DataFrame) -> str:
    """'2 succeeded, 1 failed, 1 missing, 0 unreadable'."""
    counts = table["status"].value_counts()
    return (f"{counts.get('success', 0)} succeeded, {counts.get('failed', 0)} failed, {counts.get('missing', 0)} missing, "
            f"{counts.get('unreadable', 0)} unreadable")


def varying_overrides(table: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """The override columns whose value differs between jobs, and the overrides every job shares (key: value)."""
    varying, shared = [], {}
    for column in (c for c in table.columns if c.startswith(OVERRIDE_PREFIX)):
        values = table[column].fillna("(not set)")
        if values.nunique() > 1:
            varying.append(column)
        else:
            shared[column.removeprefix(OVERRIDE_PREFIX)] = values.iloc[0]
    return varying, shared


def grid_cell(jobs: pd.DataFrame) -> str:
    """A conditions x sources cell: avg target AUROC (source AUROC) of the successful jobs, else their status."""
    done = jobs[jobs["status"] == "success"]
    if done.empty:
        return "/".join(sorted(jobs["status"].unique()))
    if len(done) == 1:
        return f"{number(done['avg_target_auroc'].iloc[0])} ({number(done['source_AUROC'].iloc[0])})" + \
            ("" if len(jobs) == 1 else f", n=1 of {len(jobs)}")
    average, source = done["avg_target_auroc"], done["source_AUROC"]
    return f"{mean_std(average.mean(), average.std())} ({mean_std(source.mean(), source.std())}), n={len(done)} of {len(jobs)}"


def conditions_section(sweep: Sweep) -> list[str]:
    """The conditions with the config values that tell them apart, and their job counts."""
    jobs = sweep.table.dropna(subset=["condition"])
    rows = []
    for condition, group in jobs.groupby("condition", sort=True):
        first = group.iloc[0]
        rows.append([condition, text(first["model"]), *(text(first[c]) for c in sweep.condition_columns),
                     str(len(group)), str(int((group["status"] == "success").sum()))])
    header = ["condition", "model", *sweep.condition_columns, "jobs", "succeeded"]
    return ["## Conditions (jobs of the same result-relevant config; seeds and source domains are repeats of it)", "",
            *markdown_table(header, rows), ""]


def statistics_rows(stats: pd.DataFrame, target_rows: bool, metrics: list[Metric]) -> list[list[str]]:
    """One row per condition x source (x evaluated domain x subgroup when target_rows): 'mean ± std (n=k of N)' per
    metric, in its digits and scale; the condition x source rows end with the note on their repeats.
    """
    chosen = stats[(stats["target"] != "") & (stats["target"] != AVERAGE)] if target_rows else stats[stats["target"] == ""]
    keys = ["condition", "source", "target", "subgroup"] if target_rows else ["condition", "source"]
    rows = []
    for key, group in chosen.groupby(keys, sort=True):
        found = group.set_index("metric")
        cells = [mean_std(found.at[m.key, "mean"], found.at[m.key, "std"], int(found.at[m.key, "n"]), m.digits, m.scale,
                          found.at[m.key, "n_total"]) if m.key in found.index else "-" for m in metrics]
        if any(cell != "-" for cell in cells):
            note = [] if target_rows else [text(group["note"].iloc[0] or None)]
            rows.append([*(str(k) if k != "" else "(all)" for k in key), *cells, *note])
    return rows


def jobs_section(table: pd.DataFrame) -> list[str]:
    """Every job with the overrides that differ between jobs."""
    varying, _ = varying_overrides(table)
    header = ["job", "condition", *(c.removeprefix(OVERRIDE_PREFIX) for c in varying), "status", "source AUROC",
              "avg target AUROC", "transfer ratio", "fit s"]
    rows = []
    for r in table.to_dict("records"):
        ratio = number(r["transfer_ratio"])
        if ratio == "-" and isinstance(r["transfer_ratio_note"], str):
            ratio = "- (no targets)" if pd.isna(r["avg_target_auroc"]) else "- (source AUROC ≤ 0.5)"
        rows.append([f"`{r['job']}`", text(r["condition"]), *(text(r[c]) for c in varying), r["status"],
                     number(r["source_AUROC"]), number(r["avg_target_auroc"]), ratio, number(r["fit_seconds"], 1)])
    return ["## Jobs", "", *markdown_table(header, rows), ""]


def summary_markdown(sweep: Sweep, stats: pd.DataFrame, sweep_dir: Path) -> str:
    """summary.md of the sweep (stats: statistics.repeat_statistics)."""
    table, counts = sweep.table, sweep.table["status"].value_counts()
    lines = [
        f"# Sweep summary: {sweep_dir}", "",
        f"{len(table)} jobs: {counts.get('success', 0)} succeeded, {counts.get('failed', 0)} failed, "
        f"{counts.get('missing', 0)} missing (no metrics.json), {counts.get('unreadable', 0)} unreadable (corrupt metrics.json).", "",
    ]
    _, shared = varying_overrides(table)
    if shared:
        lines += ["Overrides of every job: " + ", ".join(f"`{key}={value}`" for key, value in shared.items()), ""]
    jobs = table.dropna(subset=["condition", "source"])
    if len(jobs):
        lines += conditions_section(sweep)
        sources = sorted(jobs["source"].unique())
        grid = [[condition, *(grid_cell(jobs[(jobs["condition"] == condition) & (jobs["source"] == source)]) for source in sources)]
                for condition in sorted(jobs["condition"].unique())]
        lines += ["## Avg target AUROC (source AUROC), conditions x source domains", ""]
        lines += markdown_table(["condition", *sources], grid) + [""]
    if len(stats):
        lines += ["## Accuracy % and AUROC per evaluated domain, mean ± std over repeats (also summary.tex)", "",
                  "Mean ± std over the repeats (n: runs with a result of the runs made; each cell's own: the tables below). "
                  f"Accuracy at the validation threshold; `{AVERAGE}`: mean over the evaluated domains; bold: best of "
                  "each column among the conditions of one source domain.", "", *paper_markdown(stats), ""]
        shift, domain, spent = (shown(SUMMARY, table) for table in (SHIFT_METRICS, DOMAIN_METRICS, COST_METRICS))
        lines += ["## Domain shift per condition and source domain, mean ± std (n of N)", "",
                  "n of N: the repeats with a value, of all jobs of the condition and source; repeats: the seeds that gave no "
                  "value (failed, diverged, missing) and those below chance (source AUROC < 0.5), which count in the mean.", "",
                  *markdown_table(["condition", "source", *(m.title for m in shift), "repeats"],
                                  statistics_rows(stats, False, shift)), ""]
        lines += ["## Every evaluated domain and subgroup, mean ± std (n of N) (95% t-intervals, clipped to each metric's "
                  "range: summary_stats.csv, `ci_method`)", "",
                  *markdown_table(["condition", "source", "domain", "subgroup", *(m.title for m in domain)],
                                  statistics_rows(stats, True, domain)), ""]
        cost = statistics_rows(stats, False, spent)
        if cost:
            lines += ["## Cost per condition and source domain, mean ± std (n of N)", "",
                      "Test-set inference rate; peak memory: CUDA allocated on a GPU, peak RSS on a CPU (device: summary.csv "
                      "`inference_device`); memory bank: PatchCore's coreset or PaDiM's Gaussian.", "",
                      *markdown_table(["condition", "source", *(m.title for m in spent), "repeats"], cost), ""]
    lines += jobs_section(table)
    for status, title in PROBLEMS:
        bad = table[table["status"] == status]
        if len(bad):
            lines += [f"## {title}", ""] + [f"- `{r.job}`: {r.error}" for r in bad.itertuples()] + [""]
    return "\n".join(lines)
