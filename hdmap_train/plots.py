"""Pictures of one run: ROC curves, score histograms, anomaly-map grids (matplotlib, Agg canvas, no pyplot)."""

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
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
    (or as a note when it lies outside that domain's scores)."""
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
