"""The pictures of one run (plots/*.png): ROC curves and score histograms (matplotlib figures, hdmap_train.pictures),
anomaly-map grids (image mosaics composed with PIL, example_grid_image).
"""

from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont
from sklearn.metrics import auc, roc_curve

from hdmap_train.metrics import EXAMPLE_CATEGORIES, Example
from hdmap_train.pictures import new_figure, save_picture

PANELS = ("input", "anomaly map", "overlay")


def roc_figure(predictions: pd.DataFrame, threshold: float, sources: list[str]) -> Figure:
    """ROC curves of every domain on one axes, each with its operating point at the validation threshold."""
    figure = new_figure(6, 5, layout=None)
    axes = figure.add_axes((0.095, 0.096, 0.88, 0.854))  # fixed margins: no layout pass
    for domain, rows in predictions.groupby("domain", sort=False):
        labels, scores = rows["label"].to_numpy(), rows["anomaly_score"].to_numpy()
        if len(np.unique(labels)) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        role = "source" if domain in sources else "target"
        (line,) = axes.plot(fpr, tpr, label=f"{domain} ({role}) AUROC {auc(fpr, tpr):.3f}", lw=2 if role == "source" else 1.5)
        predicted = scores > threshold
        axes.plot(predicted[labels == 0].mean(), predicted[labels == 1].mean(), "o", color=line.get_color())
    axes.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate", ylabel="true-positive rate")
    axes.set_title(f"ROC per domain (dots: validation threshold {threshold:.4g})", y=1.0)  # fixed y: no layout pass
    axes.legend(loc="lower right", fontsize="small")
    return figure


READABLE_SHARE = 0.1  # a scale is readable when every domain's central 98 % spans this share of the axis (6 of 60 bins)


def _narrowest_share(domains: list[np.ndarray], threshold: float, transform) -> float:
    """The smallest share of the shared axis (all scores and the threshold) that one domain's central 98 % spans."""
    values = [transform(np.asarray(scores, dtype=np.float64)) for scores in domains]
    point = float(transform(np.float64(threshold)))
    span = max(max(v.max() for v in values), point) - min(min(v.min() for v in values), point)
    if not span > 0:
        return 1.0
    return min(float(np.ptp(np.quantile(v, [0.01, 0.99]))) for v in values) / span


def score_scale(domains: list[np.ndarray], threshold: float) -> str:
    """'linear' if every domain reads on a linear axis, else 'log' if that reads (positive scores), else 'quantile'."""
    if _narrowest_share(domains, threshold, np.asarray) >= READABLE_SHARE:
        return "linear"
    positive = threshold > 0 and all(float(np.min(scores)) > 0 for scores in domains)
    if positive and _narrowest_share(domains, threshold, np.log) >= READABLE_SHARE:
        return "log"
    return "quantile"


def score_bin_edges(low: float, high: float, bins: int, scale: str = "linear") -> np.ndarray:
    """Shared histogram edges in float64 from low to high, linear or geometric, widened when low == high (float32 ties)."""
    low, high = float(low), float(high)
    if high - low < 1e-6 * max(1.0, abs(high)):
        pad = 1e-6 * max(1.0, abs(high)) / 2
        low, high = low - pad, high + pad
    return np.geomspace(low, high, bins + 1) if scale == "log" else np.linspace(low, high, bins + 1)


def quantile_position(pooled: np.ndarray, values) -> np.ndarray:
    """Where values lie among the sorted pooled scores, from 0 to 1 (mid-rank: ties share one position)."""
    left = np.searchsorted(pooled, values, side="left")
    right = np.searchsorted(pooled, values, side="right")
    return (left + right) / (2 * len(pooled))


def histogram_figure(predictions: pd.DataFrame, threshold: float, sources: list[str], bins: int = 60) -> Figure:
    """Score histograms of normal and fault test images, one row per domain on ONE shared score axis, with the
    validation threshold as a dashed line through every row: a domain shift shows as a row moving off the line.

    The axis is linear when every domain's scores read on it, else logarithmic (positive scores), else a
    quantile axis (equal-count bins of all test scores, ticks labelled with scores): score_scale decides.
    """
    domains = list(dict.fromkeys(predictions["domain"]))
    scores = [predictions.loc[predictions["domain"] == d, "anomaly_score"].to_numpy(dtype=np.float64) for d in domains]
    scale = score_scale(scores, threshold)
    pooled = np.sort(np.concatenate(scores))
    if scale == "quantile":
        edges, line = np.linspace(0.0, 1.0, bins + 1), float(quantile_position(pooled, threshold))
        xlabel = f"anomaly score, quantile axis (each bin holds 1/{bins} of all test images)"
    else:
        edges, line = score_bin_edges(min(pooled[0], threshold), max(pooled[-1], threshold), bins, scale), threshold
        xlabel = "anomaly score" + (" (log scale)" if scale == "log" else "")
    # Fixed margins in inches (a layout engine would draw the figure several times): 0.6 above for the title,
    # 0.8 below for the axis label and the legend, 0.38 between rows for their titles, 0.3 right of the axes for
    # half of the last tick label.
    n, height, gap = len(domains), 0.9 + 1.45 * len(domains), 0.38
    spacing = {"left": 0.065, "right": 1 - 0.3 / 8, "top": 1 - 0.6 / height, "bottom": 0.8 / height,
               "hspace": gap / ((height - 1.4 - (n - 1) * gap) / n)}  # a fraction of one row's height
    figure = new_figure(8, height, layout=None)
    rows = figure.subplots(len(domains), 1, sharex=True, squeeze=False, gridspec_kw=spacing)[:, 0]
    for axes, domain in zip(rows, domains, strict=True):
        frame = predictions[predictions["domain"] == domain]
        shares = []
        for label, name, color in ((0, "normal", "tab:blue"), (1, "fault", "tab:red")):
            values = frame.loc[frame["label"] == label, "anomaly_score"].to_numpy(dtype=np.float64)
            shown = quantile_position(pooled, values) if scale == "quantile" else values
            counts = np.histogram(shown, bins=edges)[0]
            axes.stairs(counts, edges, fill=True, alpha=0.45, facecolor=color, edgecolor=color, lw=1, label=name)
            shares.append(f"{name} {(values > threshold).mean():.0%} of {len(values)}" if len(values) else f"no {name}")
        axes.axvline(line, color="black", ls="--", lw=1.2, label=f"validation threshold {threshold:.4g}")
        # A fixed title height (y=1.0): matplotlib would otherwise measure every tick label to place each title.
        axes.set_title(f"{domain} ({'source' if domain in sources else 'target'})", loc="left", fontsize="medium", y=1.0)
        axes.set_title("above the threshold: " + ", ".join(shares), loc="right", fontsize="small", y=1.0)
        axes.set_ylabel("images")
        axes.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    if scale == "log":
        rows[-1].set_xscale("log")
    if scale == "quantile":
        ticks = np.linspace(0.0, 1.0, 6)
        rows[-1].set_xticks(ticks, [f"{value:.4g}" for value in np.quantile(pooled, ticks)])
    rows[-1].set_xlim(edges[0], edges[-1])
    rows[-1].set_xlabel(xlabel)
    figure.legend(*rows[0].get_legend_handles_labels(), loc="lower center", ncols=3, fontsize="small")
    figure.suptitle("Test scores of every domain on one axis; one threshold (from source validation images) for all",
                    fontsize="medium")
    return figure


MAP_PERCENTILES = (1.0, 99.0)  # the anomaly-map colour scale spans these percentiles of every map pixel of a figure
MAP_COLOURS = colormaps["inferno"]


def map_norm(maps: list[np.ndarray]) -> Normalize:
    """The colour scale of a grid's maps: MAP_PERCENTILES of all their pixels (min/max if those tie), so a few
    extreme pixels (e.g. a zero border) do not squeeze the rest into one colour.
    """
    if not maps:
        return Normalize(0, 1)
    pixels = np.concatenate([m.ravel() for m in maps]).astype(np.float64)
    low, high = np.percentile(pixels, MAP_PERCENTILES)
    if not high > low:
        low, high = float(pixels.min()), float(pixels.max())
    return Normalize(low, high if high > low else low + 1e-6)


def overlay_pixels(image: np.ndarray, anomaly_map: np.ndarray, norm: Normalize) -> np.ndarray:
    """The map's colours over the grey input, opaque where the map is high and clear where it is low."""
    level = np.clip(np.asarray(norm(anomaly_map)), 0.0, 1.0)[..., None]
    return MAP_COLOURS(level[..., 0])[..., :3] * level + image[..., None] * (1 - level)


def fit_map(anomaly_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The map at the image's shape (bilinear), so that it lies on its image; unchanged when the shapes agree."""
    if anomaly_map.shape == shape:
        return anomaly_map
    resized = Image.fromarray(np.asarray(anomaly_map, dtype=np.float32)).resize(shape[::-1], Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float64)


def example_panels(example: Example, norm: Normalize) -> list[np.ndarray | None]:
    """RGB pixels of input | anomaly map | overlay (None without a map); a map of another size is stretched onto
    its image and laid half transparent over it.
    """
    image = (example.image - example.image.min()) / max(float(np.ptp(example.image)), 1e-12)
    grey = np.repeat(image[..., None], 3, axis=2)
    if example.anomaly_map is None:
        return [grey, None, None]
    same = example.anomaly_map.shape == image.shape
    anomaly_map = fit_map(example.anomaly_map, image.shape)
    colours = MAP_COLOURS(np.asarray(norm(anomaly_map)))[..., :3]
    return [grey, colours, overlay_pixels(image, anomaly_map, norm) if same else 0.5 * colours + 0.5 * grey]


PANEL_WIDTH = 160  # display pixels of one panel; its height follows the image's aspect ratio (clipped to 0.3-1.5)
GAP, BLOCK_GAP, LABEL_ROWS = 10, 24, 18  # pixels between panels, between categories, below each row for its labels
FONT_SIZES = {"title": 17, "header": 14, "label": 12}  # pixels: matplotlib's large / medium / small at 100 dpi
MARGIN, PANELS_TOP = 10, 2 * FONT_SIZES["title"] + 3 * FONT_SIZES["header"] + 6  # where the panel area starts


@lru_cache(maxsize=None)
def font(kind: str) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (matplotlib's own font file, so the grids read like the other pictures) at FONT_SIZES[kind]."""
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), FONT_SIZES[kind])


def to_bytes(pixels) -> np.ndarray:
    """Colours in [0, 1] as 8-bit values."""
    return np.round(np.clip(np.asarray(pixels, dtype=np.float64), 0.0, 1.0) * 255).astype(np.uint8)


def panel_size(shape: tuple[int, int]) -> tuple[int, int]:
    """(width, height) in display pixels of a panel of an image of this (height, width)."""
    return PANEL_WIDTH, round(PANEL_WIDTH * float(np.clip(shape[0] / shape[1], 0.3, 1.5)))


def panel_corner(block: int, offset: int, rank: int, panel: tuple[int, int]) -> tuple[int, int]:
    """Top-left pixel of panel `offset` (of PANELS) of category `block`, row `rank`, in the whole picture."""
    x = MARGIN + block * (len(PANELS) * (panel[0] + GAP) - GAP + BLOCK_GAP) + offset * (panel[0] + GAP)
    return x, PANELS_TOP + rank * (panel[1] + LABEL_ROWS)


def to_panel(pixels: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """RGB pixels in [0, 1] as an image of the panel size: nearest-neighbour when enlarging (every map pixel stays a
    sharp block), box-averaged when shrinking.
    """
    image = Image.fromarray(to_bytes(pixels), mode="RGB")
    enlarging = size[0] >= image.width and size[1] >= image.height
    return image.resize(size, Image.Resampling.NEAREST if enlarging else Image.Resampling.BOX)


def grid_texts(examples: dict[str, list[Example]], n_examples: int, panel: tuple[int, int]) -> list[tuple[float, float, str, str]]:
    """(x, y, text, font kind) of every label of an anomaly-map grid, each centred on x with its top at y: a
    header over each column (the category over its middle column), the file name under each input, the score
    under each map.
    """
    texts = []
    for block, category in enumerate(EXAMPLE_CATEGORIES):
        for offset, name in enumerate(PANELS):
            x, y = panel_corner(block, offset, 0, panel)
            if offset == 1:
                texts.append((x + panel[0] / 2, y - 2.6 * FONT_SIZES["header"], category, "header"))
            texts.append((x + panel[0] / 2, y - 1.4 * FONT_SIZES["header"], name, "header"))
        for rank, example in enumerate(examples.get(category, [])[:n_examples]):
            for offset, label in ((0, Path(example.path).name), (1, f"score {example.score:.4g}")):
                x, y = panel_corner(block, offset, rank, panel)
                texts.append((x + panel[0] / 2, y + panel[1] + 2, label, "label"))
    return texts


def colour_bar(norm: Normalize, height: int) -> Image.Image:
    """The maps' colour scale as a vertical bar with pointed ends (colours saturate beyond it), ticks and a label."""
    bar_width, point = 14, 10
    image = Image.new("RGB", (bar_width + 56 + FONT_SIZES["label"] + 8, height + 2 * point), "white")
    draw = ImageDraw.Draw(image)
    image.paste(Image.fromarray(to_bytes(MAP_COLOURS(np.linspace(1.0, 0.0, height)[:, None].repeat(bar_width, 1))[..., :3])),
                (0, point))
    for y, tip, level in ((point, 0, 1.0), (point + height, 2 * point + height, 0.0)):
        draw.polygon([(0, y), (bar_width - 1, y), (bar_width / 2, tip)], fill=tuple(to_bytes(MAP_COLOURS(level)[:3])))
    for value in MaxNLocator(nbins=5).tick_values(norm.vmin, norm.vmax):
        if norm.vmin <= value <= norm.vmax:
            y = point + (1 - float(norm(value))) * (height - 1)
            draw.line([(bar_width, y), (bar_width + 4, y)], fill="black")
            draw.text((bar_width + 7, y), f"{value:.4g}", fill="black", font=font("label"), anchor="lm")
    side = Image.new("RGB", (image.height, FONT_SIZES["label"] + 6), "white")
    ImageDraw.Draw(side).text((side.width / 2, 0), f"anomaly map (p{MAP_PERCENTILES[0]:g}–p{MAP_PERCENTILES[1]:g} of the "
                              "maps shown)", fill="black", font=font("label"), anchor="mt")
    image.paste(side.rotate(90, expand=True), (image.width - side.height, 0))
    return image


def example_grid_image(domain: str, examples: dict[str, list[Example]], n_examples: int) -> Image.Image:
    """For each category of EXAMPLE_CATEGORIES, three columns input | anomaly map | overlay; rank 1..n_examples down,
    each input labelled with its file name, each map with the image score.

    Composed directly with PIL: a mosaic of images and labels needs no plotting library (about ten times cheaper
    than drawing it with matplotlib). One colour scale (the colour bar) for every map of the picture, so maps
    compare across categories: the 1st to 99th percentile of their pixels (map_norm); beyond it colours saturate.
    """
    maps = [e.anomaly_map for kept in examples.values() for e in kept if e.anomaly_map is not None]
    norm = map_norm(maps)
    shapes = [e.image.shape for kept in examples.values() for e in kept] or [(1, 1)]
    panel = panel_size(shapes[0])
    right, bottom = panel_corner(len(EXAMPLE_CATEGORIES) - 1, len(PANELS), n_examples, panel)
    bar = colour_bar(norm, max(bottom - PANELS_TOP - 2 * LABEL_ROWS, 60)) if maps else None
    image = Image.new("RGB", (right + MARGIN + (bar.width + 20 if bar else 0), bottom + 6), "white")
    for block, category in enumerate(EXAMPLE_CATEGORIES):
        for rank, example in enumerate(examples.get(category, [])[:n_examples]):
            for offset, pixels in enumerate(example_panels(example, norm)):
                if pixels is not None:
                    image.paste(to_panel(pixels, panel), panel_corner(block, offset, rank, panel))
    draw = ImageDraw.Draw(image)
    for x, y, text, kind in grid_texts(examples, n_examples, panel):
        draw.text((x, y), text, fill="black", font=font(kind), anchor="ma")
    if bar is not None:
        image.paste(bar, (right + 10, PANELS_TOP + LABEL_ROWS // 2))
    draw.text((image.width / 2, FONT_SIZES["title"] // 2), f"{domain}: anomaly maps (colour scale shared by all maps of "
              "this picture)", fill="black", font=font("title"), anchor="ma")
    return image


def write_plots(
    plots_dir: Path, predictions: pd.DataFrame, threshold: float, sources: list[str],
    examples: dict[str, dict[str, list[Example]]], n_examples: int,
) -> dict[str, Path]:
    """roc.png, score_histograms.png and anomaly_maps_<domain>.png; returns {name: path}. sources: the source domains."""
    pictures = {
        "roc": save_picture(roc_figure(predictions, threshold, sources), plots_dir / "roc.png"),
        "score_histograms": save_picture(histogram_figure(predictions, threshold, sources), plots_dir / "score_histograms.png"),
    }
    for domain, kept in examples.items():
        grid = example_grid_image(domain, kept, n_examples)
        pictures[f"anomaly_maps_{domain}"] = save_picture(grid, plots_dir / f"anomaly_maps_{domain}.png")
    return pictures
