"""The sweep's pictures: summary.png (AUROC heatmaps, conditions x evaluated domains, one panel per source) and
transfer_matrix.png (source x evaluated domain AUROC, one panel per condition).

A job trained on several sources is a source of its own (`A+B`: a panel, a row); its columns are the
evaluated domains, each source domain on its own.
"""

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from hdmap_train.domains import SEPARATOR
from hdmap_train.pictures import new_figure


def text_colour(rgba: tuple[float, ...]) -> str:
    """Black or white, whichever reads better on a cell of this colour (relative luminance)."""
    red, green, blue = rgba[:3]
    return "black" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.45 else "white"


AUROC_COLOURS, AUROC_NORM = colormaps["RdYlGn"], Normalize(0.0, 1.0)  # 0 to 1: AUROCs below chance stay distinguishable


def auroc_cells(ax, matrix: pd.DataFrame, counts: pd.DataFrame | None = None, spreads: pd.DataFrame | None = None) -> None:
    """Draw an AUROC matrix on ax: colours on the 0-1 scale, each value (± its std over repeats, and n) in black or
    white to read on its cell.
    """
    values = matrix.to_numpy(dtype=float)
    ax.imshow(values, cmap=AUROC_COLOURS, norm=AUROC_NORM, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        if np.isnan(value):
            continue
        spread = np.nan if spreads is None or j >= spreads.shape[1] else spreads.iat[i, j]
        label = f"{value:.3f}" + ("" if np.isnan(spread) else f"\n±{spread:.3f}") + ("" if counts is None else f"\nn={counts.iat[i, j]}")
        ax.text(j, i, label, ha="center", va="center", fontsize=7 if spreads is not None else 8,
                color=text_colour(AUROC_COLOURS(AUROC_NORM(value))))


def outline(ax, row: int, column: int, rows: int = 1, colour: str = "black") -> None:
    """A frame around rows cells of one column, starting at (row, column)."""
    ax.add_patch(Rectangle((column - 0.5, row - 0.5), 1, rows, fill=False, edgecolor=colour, lw=2 if colour == "black" else 3))


AVG_TARGET = "avg\ntarget"  # the headline column: mean AUROC over the evaluated domains that are not a source
HEADLINE = "tab:blue"


def avg_target(row: pd.Series, source: str) -> float:
    """Mean of a row's AUROCs over the domains that are not one of `source`'s (A, or A+B)."""
    targets = [domain for domain in row.index if domain not in source.split("+")]
    return float(row[targets].mean()) if targets else float("nan")


def auroc_colour_bar(figure: Figure, axes: list) -> None:
    """The colour bar of the AUROC panels."""
    figure.colorbar(ScalarMappable(AUROC_NORM, AUROC_COLOURS), ax=axes, label="image AUROC (0.5 = chance)", shrink=0.8)


def heatmap_figure(matrices: dict[str, pd.DataFrame], notes: dict[str, dict[str, str]],
                   spreads: dict[str, pd.DataFrame] | None = None, counts: dict[str, pd.DataFrame] | None = None) -> Figure:
    """Sweep AUROC heatmaps: one panel per source domain, conditions x evaluated domains, source column outlined.

    notes[source][condition]: the status of a condition without success; spreads and counts: the std and number
    of the repeats behind each cell (the average column: its fewest).
    """
    sources = list(matrices)
    conditions = list(next(iter(matrices.values())).index) if matrices else []
    domains = list(next(iter(matrices.values())).columns) if matrices else []
    width = max(4.5, 0.9 * (len(domains) + 1) * len(sources) + 0.08 * max(map(len, conditions), default=0) + 2.5)
    figure = new_figure(width, 1.9 + (0.75 if counts else 0.45) * len(conditions))
    if not domains:
        figure.text(0.5, 0.5, "no successful job yet", ha="center", va="center")
        return figure
    axes = figure.subplots(1, len(sources), squeeze=False)[0]
    for ax, source in zip(axes, sources, strict=True):
        matrix = matrices[source]
        count = None
        if counts:
            targets = [domain for domain in domains if domain not in source.split("+")]
            count = counts[source].assign(**{AVG_TARGET: counts[source][targets].min(axis=1) if targets else 0})
        auroc_cells(ax, matrix.assign(**{AVG_TARGET: matrix.apply(avg_target, axis=1, source=source)}), count,
                    spreads[source] if spreads else None)
        ax.set_xticks(range(len(domains) + 1), [f"{d}\n(source)" if d in source.split("+") else d for d in domains] + [AVG_TARGET])
        ax.set_yticks(range(len(conditions)), conditions)
        ax.set_title(f"trained on {source}")
        for domain in source.split("+"):  # one source (A), or several (A+B)
            if domain in domains:
                outline(ax, 0, domains.index(domain), len(conditions))
        outline(ax, 0, len(domains), len(conditions), HEADLINE)
        for i, condition in enumerate(conditions):
            if condition in notes.get(source, {}):
                ax.text((len(domains) - 1) / 2, i, notes[source][condition], ha="center", va="center", color="grey")
    auroc_colour_bar(figure, list(axes))
    figure.suptitle("Image AUROC per evaluated domain, by source domain: mean ± std over the n repeats of each cell\n"
                    "(black: the source's own test set; blue: the average over the targets, the headline number, n: its fewest)")
    return figure


def transfer_matrix_figure(means: dict[str, pd.DataFrame], counts: dict[str, pd.DataFrame],
                           spreads: dict[str, pd.DataFrame] | None = None) -> Figure:
    """Transfer matrices: one panel per condition, source domains (rows) x evaluated domains (columns).

    means[condition]: mean image AUROC over the condition's jobs per cell, counts[condition]: how many jobs
    (n, written in the cell); the diagonal (each source's own test set) is outlined.
    """
    conditions = list(means)
    first = next(iter(means.values()))
    sources, domains = list(first.index), list(first.columns)
    columns = min(len(conditions), 3)
    rows = -(-len(conditions) // columns)
    figure = new_figure(max(6.0, (0.9 * (len(domains) + 1) + 1.6) * columns + 1.5), (0.9 * len(sources) + 1.3) * rows + 1.0)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, condition in zip(axes, conditions, strict=False):
        mean, count = means[condition], counts[condition]
        averages = [avg_target(mean.loc[source], source) for source in sources]
        targets = {source: [d for d in domains if d not in source.split("+")] for source in sources}
        fewest = [int(count.loc[source, targets[source]].min()) if targets[source] else 0 for source in sources]
        auroc_cells(ax, mean.assign(**{AVG_TARGET: averages}), count.assign(**{AVG_TARGET: fewest}),
                    spreads[condition] if spreads else None)
        ax.set_xticks(range(len(domains) + 1), [*domains, AVG_TARGET])
        outline(ax, 0, len(domains), len(sources), HEADLINE)
        ax.set_yticks(range(len(sources)), sources)
        ax.set(xlabel="evaluated on", ylabel="trained on", title=condition)
        for i, source in enumerate(sources):
            for domain in source.split("+"):  # one source (A), or several (A+B)
                if domain in domains:
                    outline(ax, i, domains.index(domain))
    for ax in axes[len(conditions):]:
        ax.axis("off")
    auroc_colour_bar(figure, list(axes))
    figure.suptitle("Transfer matrix: image AUROC, trained on (rows) x evaluated on (columns)\n"
                    "mean ± std of the n jobs of each cell; black: the source's own test set; blue: the average over the "
                    "targets (n: the fewest jobs of its cells)")
    return figure


def auroc_matrix(rows: pd.DataFrame, statistic: str = "mean") -> pd.DataFrame:
    """AUROC of each condition (rows) on each evaluated domain (columns); repeated conditions are summarised by
    `statistic` (mean, std or count).

    A single source's AUROC is its column; several sources have a column each (AUROC_<domain>), not a pooled one.
    """
    entries = []
    for row in rows.to_dict("records"):
        if SEPARATOR not in row["source"]:
            entries.append((row["condition"], row["source"], row["source_AUROC"]))
        entries += [(row["condition"], key.removeprefix("AUROC_"), value) for key, value in row.items() if key.startswith("AUROC_")]
    long = pd.DataFrame(entries, columns=["condition", "domain", "AUROC"]).dropna()
    return long.pivot_table(index="condition", columns="domain", values="AUROC", aggfunc=statistic)


def heatmap_panels(table: pd.DataFrame) -> tuple[dict, dict, dict, dict]:
    """Per source domain: the AUROC matrix (conditions x evaluated domains), the status of conditions without success,
    and the std and number of repeats of each cell.
    """
    jobs = table.dropna(subset=["condition", "source"])
    conditions = sorted(jobs["condition"].unique())
    done = jobs[jobs["status"] == "success"]
    single = {source for source in done["source"] if SEPARATOR not in source}
    domains = sorted(single | {c.removeprefix("AUROC_") for c in done.columns if c.startswith("AUROC_")})
    matrices, notes, spreads, counts = {}, {}, {}, {}
    for source in sorted(jobs["source"].unique()):
        found = done[done["source"] == source]
        matrices[source], spreads[source] = (auroc_matrix(found, statistic).reindex(index=conditions, columns=domains)
                                             for statistic in ("mean", "std"))
        counts[source] = auroc_matrix(found, "count").reindex(index=conditions, columns=domains).fillna(0).astype(int)
        notes[source] = {}
        for condition in conditions:
            statuses = set(jobs[(jobs["source"] == source) & (jobs["condition"] == condition)]["status"])
            if statuses and "success" not in statuses:
                notes[source][condition] = "/".join(sorted(statuses))
    return matrices, notes, spreads, counts


def summary_figure(table: pd.DataFrame) -> Figure:
    """summary.png."""
    matrices, notes, spreads, counts = heatmap_panels(table)
    return heatmap_figure(matrices, notes, spreads, counts)


def transfer_panels(long: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Per condition: mean image AUROC (sources x evaluated domains, over its jobs), the number of jobs per cell and
    their std.
    """
    auroc = long[(long["metric"] == "image_AUROC") & (long["subgroup"] == "")].dropna(subset=["value"])
    auroc = auroc.astype({"value": float})
    sources = sorted(auroc["source"].unique())
    domains = sorted(set(auroc["target"]) | {source for source in sources if SEPARATOR not in source})
    means, counts, spreads = {}, {}, {}
    for condition, rows in auroc.groupby("condition", sort=True):
        cells = {statistic: rows.pivot_table(index="source", columns="target", values="value", aggfunc=statistic)
                 for statistic in ("mean", "count", "std")}  # one at a time: a std of single values is all NaN, and dropped
        means[condition] = cells["mean"].reindex(index=sources, columns=domains)
        counts[condition] = cells["count"].reindex(index=sources, columns=domains).fillna(0).astype(int)
        spreads[condition] = cells["std"].reindex(index=sources, columns=domains)
    return means, counts, spreads


def transfer_figure(long: pd.DataFrame) -> Figure | None:
    """transfer_matrix.png, or None when the successful jobs were trained on fewer than two source domains."""
    if long.loc[long["metric"] == "image_AUROC", "source"].nunique() < 2:
        return None
    return transfer_matrix_figure(*transfer_panels(long))
