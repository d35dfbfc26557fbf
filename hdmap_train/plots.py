"""Every picture: of one run (ROC curves, score histograms, anomaly-map grids) and of a sweep (AUROC heatmaps,
transfer matrices).

matplotlib on an Agg canvas, no pyplot (no global state, no GUI).
"""

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import auc, roc_curve

from hdmap_train.evaluation import EXAMPLE_CATEGORIES, Example

DPI = 100
PANELS = ("input", "anomaly map", "overlay")


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    """A figure drawn by the Agg backend (no GUI, no global pyplot state)."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: Path) -> Path:
    """Write the figure as PNG (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI)
    return path


def roc_figure(predictions: pd.DataFrame, threshold: float, source: str) -> Figure:
    """ROC curves of every domain on one axes, each with its operating point at the validation threshold."""
    figure = new_figure(6, 5)
    axes = figure.add_subplot()
    for domain, rows in predictions.groupby("domain", sort=False):
        labels, scores = rows["label"].to_numpy(), rows["anomaly_score"].to_numpy()
        if len(np.unique(labels)) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        role = "source" if domain == source else "target"
        (line,) = axes.plot(fpr, tpr, label=f"{domain} ({role}) AUROC {auc(fpr, tpr):.3f}", lw=2 if role == "source" else 1.5)
        predicted = scores > threshold
        axes.plot(predicted[labels == 0].mean(), predicted[labels == 1].mean(), "o", color=line.get_color())
    axes.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate", ylabel="true-positive rate",
             title=f"ROC per domain (dots: validation threshold {threshold:.4g})")
    axes.legend(loc="lower right", fontsize="small")
    return figure


def score_bin_edges(scores: np.ndarray, bins: int) -> np.ndarray:
    """Histogram edges in float64, widened when the scores are (nearly) constant (float32 ties)."""
    low, high = float(np.min(scores)), float(np.max(scores))
    pad = max(high - low, 1e-6 * max(1.0, abs(high))) / 2 if high - low < 1e-6 * max(1.0, abs(high)) else 0.0
    return np.linspace(low - pad, high + pad, bins + 1)


def histogram_figure(predictions: pd.DataFrame, threshold: float, source: str, bins: int = 30) -> Figure:
    """One panel per domain: score histograms of normal and fault test images, the validation threshold as a line
    (or as a note when it lies outside that domain's scores).
    """
    domains = list(dict.fromkeys(predictions["domain"]))
    figure = new_figure(3.6 * len(domains), 3.2, layout="tight")
    for axes, domain in zip(figure.subplots(1, len(domains), squeeze=False)[0], domains, strict=True):
        rows = predictions[predictions["domain"] == domain]
        edges = score_bin_edges(rows["anomaly_score"].to_numpy(), bins)
        for label, name, color in ((0, "normal", "tab:blue"), (1, "fault", "tab:red")):
            scores = rows.loc[rows["label"] == label, "anomaly_score"]
            axes.hist(scores, bins=edges, histtype="stepfilled", alpha=0.5, color=color, label=f"{name} ({len(scores)})")
        if edges[0] <= threshold <= edges[-1]:
            axes.axvline(threshold, color="black", ls="--", lw=1.2, label="validation threshold")
        else:  # a shifted domain: drawing the line would squeeze every score into one bin
            side = "below" if threshold < edges[0] else "above"
            axes.text(0.5, 0.97, f"validation threshold {threshold:.4g}\n{side} every score", transform=axes.transAxes,
                      ha="center", va="top", fontsize="small", bbox={"facecolor": "white", "alpha": 0.8})
        role = "source" if domain == source else "target"
        axes.set(title=f"{domain} ({role})", xlabel="anomaly score", ylabel="images")
        axes.xaxis.set_major_locator(MaxNLocator(4))
        axes.legend(fontsize="x-small")
    return figure


def example_grid_figure(domain: str, examples: dict[str, list[Example]], n_examples: int) -> Figure:
    """For each category of EXAMPLE_CATEGORIES, three columns input | anomaly map | overlay; rank 1..n_examples down.

    Each column is one axes with its images stacked (9 axes instead of 9 x n: several times faster to draw).
    One colour scale (the colour bar) for every map of the figure, so maps compare across categories.
    """
    maps = [e.anomaly_map for kept in examples.values() for e in kept if e.anomaly_map is not None]
    norm = Normalize(min(float(m.min()) for m in maps), max(float(m.max()) for m in maps)) if maps else Normalize(0, 1)
    shapes = [e.image.shape for kept in examples.values() for e in kept] or [(1, 1)]
    height, width = shapes[0]
    gap = 0.35 * height  # room for the file name below each image
    aspect = float(np.clip(height / width, 0.3, 1.5))
    figure_height = (1.7 * aspect * 1.35) * n_examples + 0.9
    spacing = {"left": 0.03, "right": 0.93, "bottom": 0.1 / figure_height, "top": 1 - 0.8 / figure_height, "wspace": 0.08}
    figure = new_figure(1.7 * len(EXAMPLE_CATEGORIES) * len(PANELS) + 1.0, figure_height, layout=None)
    columns = figure.subplots(1, len(EXAMPLE_CATEGORIES) * len(PANELS), gridspec_kw=spacing)
    mappable = None
    for block, category in enumerate(EXAMPLE_CATEGORIES):
        cells = columns[block * len(PANELS):(block + 1) * len(PANELS)]
        for cell, panel in zip(cells, PANELS, strict=True):
            cell.set_title(f"{category}\n{panel}" if panel == "input" else panel, fontsize="small")
            cell.set(xlim=(0, width), ylim=(n_examples * (height + gap) - gap, 0), xticks=[], yticks=[])
            cell.axis("off")
        for rank, example in enumerate(examples.get(category, [])[:n_examples]):
            top = rank * (height + gap)
            extent = (0, width, top + height, top)  # a map of another size is stretched onto its image
            image = (example.image - example.image.min()) / max(float(np.ptp(example.image)), 1e-12)
            cells[0].imshow(image, cmap="gray", vmin=0, vmax=1, extent=extent, aspect="auto")
            cells[0].text(-0.02 * width, top + height / 2, f"{example.score:.4g}", rotation=90, ha="right", va="center",
                          fontsize="x-small")
            cells[0].text(width / 2, top + height + 0.05 * gap, Path(example.path).name, ha="center", va="top",
                          fontsize="xx-small")
            if example.anomaly_map is None:
                continue
            mappable = cells[1].imshow(example.anomaly_map, cmap="jet", norm=norm, extent=extent, aspect="auto")
            cells[2].imshow(image, cmap="gray", vmin=0, vmax=1, extent=extent, aspect="auto")
            cells[2].imshow(example.anomaly_map, cmap="jet", norm=norm, alpha=0.5, extent=extent, aspect="auto")
    if mappable is not None:
        figure.colorbar(mappable, cax=figure.add_axes((0.945, 0.15, 0.01, 0.65)), label="anomaly map")
    figure.suptitle(f"{domain}: anomaly maps (left of each input: its image score)")
    return figure


def text_colour(rgba: tuple[float, ...]) -> str:
    """Black or white, whichever reads better on a cell of this colour (relative luminance)."""
    red, green, blue = rgba[:3]
    return "black" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.45 else "white"


AUROC_COLOURS, AUROC_NORM = colormaps["RdYlGn"], Normalize(0.0, 1.0)  # 0 to 1: AUROCs below chance stay distinguishable


def auroc_cells(ax, matrix: pd.DataFrame, counts: pd.DataFrame | None = None) -> None:
    """Draw an AUROC matrix on ax: colours on the 0-1 scale, each value (and n) in black or white to read on its cell."""
    values = matrix.to_numpy(dtype=float)
    ax.imshow(values, cmap=AUROC_COLOURS, norm=AUROC_NORM, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        if np.isnan(value):
            continue
        label = f"{value:.3f}" if counts is None else f"{value:.3f}\nn={counts.iat[i, j]}"
        ax.text(j, i, label, ha="center", va="center", fontsize=8, color=text_colour(AUROC_COLOURS(AUROC_NORM(value))))


def outline(ax, row: int, column: int, rows: int = 1) -> None:
    """A black frame around rows cells of one column, starting at (row, column)."""
    ax.add_patch(Rectangle((column - 0.5, row - 0.5), 1, rows, fill=False, edgecolor="black", lw=2))


def auroc_colour_bar(figure: Figure, axes: list) -> None:
    """The colour bar of the AUROC panels."""
    figure.colorbar(ScalarMappable(AUROC_NORM, AUROC_COLOURS), ax=axes, label="image AUROC (0.5 = chance)", shrink=0.8)


def heatmap_figure(matrices: dict[str, pd.DataFrame], notes: dict[str, dict[str, str]]) -> Figure:
    """Sweep AUROC heatmaps: one panel per source domain, conditions x evaluated domains, source column outlined.

    notes[source][condition]: the status of a condition without success.
    """
    sources = list(matrices)
    conditions = list(next(iter(matrices.values())).index) if matrices else []
    domains = list(next(iter(matrices.values())).columns) if matrices else []
    width = max(4.5, 0.9 * len(domains) * len(sources) + 0.08 * max(map(len, conditions), default=0) + 2.5)
    figure = new_figure(width, 1.9 + 0.45 * len(conditions))
    if not domains:
        figure.text(0.5, 0.5, "no successful job yet", ha="center", va="center")
        return figure
    axes = figure.subplots(1, len(sources), squeeze=False)[0]
    for ax, source in zip(axes, sources, strict=True):
        auroc_cells(ax, matrices[source])
        ax.set_xticks(range(len(domains)), [f"{d}\n(source)" if d == source else d for d in domains])
        ax.set_yticks(range(len(conditions)), conditions)
        ax.set_title(f"trained on {source}")
        if source in domains:
            outline(ax, 0, domains.index(source), len(conditions))
        for i, condition in enumerate(conditions):
            if condition in notes.get(source, {}):
                ax.text((len(domains) - 1) / 2, i, notes[source][condition], ha="center", va="center", color="grey")
    auroc_colour_bar(figure, list(axes))
    figure.suptitle("Image AUROC per evaluated domain, by source domain\n(outlined: the source's own test set)")
    return figure


def transfer_matrix_figure(means: dict[str, pd.DataFrame], counts: dict[str, pd.DataFrame]) -> Figure:
    """Transfer matrices: one panel per condition, source domains (rows) x evaluated domains (columns).

    means[condition]: mean image AUROC over the condition's jobs per cell, counts[condition]: how many jobs
    (n, written in the cell); the diagonal (each source's own test set) is outlined.
    """
    conditions = list(means)
    first = next(iter(means.values()))
    sources, domains = list(first.index), list(first.columns)
    columns = min(len(conditions), 3)
    rows = -(-len(conditions) // columns)
    figure = new_figure(max(6.0, (0.9 * len(domains) + 1.6) * columns + 1.5), (0.75 * len(sources) + 1.3) * rows + 1.0)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, condition in zip(axes, conditions, strict=False):
        auroc_cells(ax, means[condition], counts[condition])
        ax.set_xticks(range(len(domains)), domains)
        ax.set_yticks(range(len(sources)), sources)
        ax.set(xlabel="evaluated on", ylabel="trained on", title=condition)
        for i, source in enumerate(sources):
            if source in domains:
                outline(ax, i, domains.index(source))
    for ax in axes[len(conditions):]:
        ax.axis("off")
    auroc_colour_bar(figure, list(axes))
    figure.suptitle("Transfer matrix: image AUROC, trained on (rows) x evaluated on (columns)\n"
                    "mean of the n jobs of each cell; outlined: the source's own test set")
    return figure
