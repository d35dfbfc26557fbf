"""The sweep's pictures: summary.png (AUROC heatmaps, conditions x evaluated domains, one panel per source) and
transfer_matrix.png (source x evaluated domain AUROC, one panel per condition).

A job trained on several sources is a source of its own (`A+B`: a panel, a row); its columns are the
evaluated domains, each source domain on its own.
"""

import pandas as pd
from matplotlib.figure import Figure

from hdmap_train.domains import SEPARATOR
from hdmap_train.plots import heatmap_figure, transfer_matrix_figure


def auroc_matrix(rows: pd.DataFrame) -> pd.DataFrame:
    """AUROC of each condition (rows) on each evaluated domain (columns); repeated conditions are averaged.

    A single source's AUROC is its column; several sources have a column each (AUROC_<domain>), not a pooled one.
    """
    entries = []
    for row in rows.to_dict("records"):
        if SEPARATOR not in row["source"]:
            entries.append((row["condition"], row["source"], row["source_AUROC"]))
        entries += [(row["condition"], key.removeprefix("AUROC_"), value) for key, value in row.items() if key.startswith("AUROC_")]
    long = pd.DataFrame(entries, columns=["condition", "domain", "AUROC"]).dropna()
    return long.pivot_table(index="condition", columns="domain", values="AUROC", aggfunc="mean")


def heatmap_panels(table: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, str]]]:
    """Per source domain: the AUROC matrix (conditions x evaluated domains) and the status of conditions without success."""
    jobs = table.dropna(subset=["condition", "source"])
    conditions = sorted(jobs["condition"].unique())
    done = jobs[jobs["status"] == "success"]
    single = {source for source in done["source"] if SEPARATOR not in source}
    domains = sorted(single | {c.removeprefix("AUROC_") for c in done.columns if c.startswith("AUROC_")})
    matrices, notes = {}, {}
    for source in sorted(jobs["source"].unique()):
        matrices[source] = auroc_matrix(done[done["source"] == source]).reindex(index=conditions, columns=domains)
        notes[source] = {}
        for condition in conditions:
            statuses = set(jobs[(jobs["source"] == source) & (jobs["condition"] == condition)]["status"])
            if statuses and "success" not in statuses:
                notes[source][condition] = "/".join(sorted(statuses))
    return matrices, notes


def summary_figure(table: pd.DataFrame) -> Figure:
    """summary.png."""
    return heatmap_figure(*heatmap_panels(table))


def transfer_panels(long: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Per condition: mean image AUROC (sources x evaluated domains, over its jobs) and the number of jobs per cell."""
    auroc = long[(long["metric"] == "image_AUROC") & (long["subgroup"] == "")].dropna(subset=["value"])
    auroc = auroc.astype({"value": float})
    sources = sorted(auroc["source"].unique())
    domains = sorted(set(auroc["target"]) | {source for source in sources if SEPARATOR not in source})
    means, counts = {}, {}
    for condition, rows in auroc.groupby("condition", sort=True):
        cells = rows.pivot_table(index="source", columns="target", values="value", aggfunc=["mean", "count"])
        means[condition] = cells["mean"].reindex(index=sources, columns=domains)
        counts[condition] = cells["count"].reindex(index=sources, columns=domains).fillna(0).astype(int)
    return means, counts


def transfer_figure(long: pd.DataFrame) -> Figure | None:
    """transfer_matrix.png, or None when the successful jobs were trained on fewer than two source domains."""
    if long.loc[long["metric"] == "image_AUROC", "source"].nunique() < 2:
        return None
    return transfer_matrix_figure(*transfer_panels(long))
