"""The pictures (panels, valid PNGs) and what reaches TensorBoard (scalars, images, hparams)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hdmap_train.metrics import EXAMPLE_CATEGORIES, Example, domain_metrics, transfer_metrics
from hdmap_train.run_plots import (
    LABEL_ROWS,
    MAP_COLOURS,
    MARGIN,
    PANEL_WIDTH,
    PANELS_TOP,
    example_grid_image,
    grid_texts,
    histogram_figure,
    map_norm,
    panel_corner,
    panel_size,
    roc_figure,
    score_scale,
    to_bytes,
    write_plots,
)
from hdmap_train.tensorboard_log import (
    HPARAM_METRICS,
    log_to_tensorboard,
    metric_scalars,
    write_pictures,
)

DOMAINS = ["domain_A", "domain_B", "domain_C"]
THRESHOLD = 0.8


def predictions() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frames = []
    for shift, domain in enumerate(DOMAINS):
        labels = np.repeat([0, 1], 20)
        frames.append(pd.DataFrame({
            "domain": domain, "split": "test", "image_path": [f"/{domain}/{i}.tiff" for i in range(40)], "label": labels,
            "anomaly_score": rng.normal(labels + 0.3 * shift, 0.5), "predicted_label": 0,
            "subgroup": np.where(np.arange(40) % 2 == 0, "cold", "warm"),
        }))
    return pd.concat(frames, ignore_index=True)


def examples(n: int, shape: tuple[int, int] = (16, 48), with_maps: bool = True) -> dict[str, list[Example]]:
    rng = np.random.default_rng(1)
    return {
        category: [
            Example(float(i), label, f"/x/{i}.tiff", rng.random(shape), rng.random(shape) * (i + 1) if with_maps else None)
            for i in range(n)
        ]
        for category, (label, _) in EXAMPLE_CATEGORIES.items()
    }


def record_for(frame: pd.DataFrame) -> dict:
    results = {d: domain_metrics(d, frame[frame["domain"] == d], THRESHOLD) for d in DOMAINS}
    source = results.pop("domain_A")
    shift = transfer_metrics(source["image_AUROC"], [r["image_AUROC"] for r in results.values()])
    return {"source_results": source, "target_results": results, **shift, "validation": {"threshold": THRESHOLD}}


def test_roc_figure_has_one_curve_and_operating_point_per_domain() -> None:
    axes = roc_figure(predictions(), THRESHOLD, ["domain_A"]).axes
    assert len(axes) == 1
    labels = [text.get_text() for text in axes[0].get_legend().get_texts()]
    assert len(labels) == 3 and labels[0].startswith("domain_A (source) AUROC")
    assert len(axes[0].get_lines()) == 3 * 2 + 1  # curve + operating point per domain, chance diagonal


def test_roc_figure_skips_a_domain_without_faults() -> None:
    frame = predictions()
    frame = frame[~((frame["domain"] == "domain_C") & (frame["label"] == 1))]
    labels = [text.get_text() for text in roc_figure(frame, THRESHOLD, ["domain_A"]).axes[0].get_legend().get_texts()]
    assert [label.split()[0] for label in labels] == ["domain_A", "domain_B"]


def test_histograms_share_one_score_axis_with_the_threshold_line() -> None:
    figure = histogram_figure(predictions(), THRESHOLD, ["domain_A"])
    assert len(figure.axes) == 3
    limits = {axes.get_xlim() for axes in figure.axes}
    assert len(limits) == 1 and figure.axes[0].get_xscale() == "linear"  # scores of one range: a linear shared axis
    for axes, domain in zip(figure.axes, DOMAINS, strict=True):
        assert axes.get_title(loc="left").startswith(domain)
        assert axes.get_title(loc="right").startswith("above the threshold: normal ")
        assert [line.get_xdata()[0] for line in axes.get_lines()] == [THRESHOLD]
        assert len(axes.patches) == 2  # normal and fault histograms
        assert all(float(tick).is_integer() for tick in axes.get_yticks())  # image counts


def test_no_tick_label_is_clipped_at_the_figures_edge() -> None:
    scores = np.linspace(0.9, 1.0, 40)  # the axis ends on a tick (1.00), as a quick start's scores do
    frame = pd.DataFrame({"domain": "domain_A", "label": [0, 1] * 20, "anomaly_score": scores, "subgroup": ""})
    figure = histogram_figure(frame, 0.95, ["domain_A"])
    figure.canvas.draw()
    renderer, width = figure.canvas.get_renderer(), figure.bbox.width
    low, high = figure.axes[-1].get_xlim()
    labels = [label for label in figure.axes[-1].get_xticklabels() if label.get_text() and low <= label.get_position()[0] <= high]
    assert labels[-1].get_position()[0] == high
    assert all(0 <= label.get_window_extent(renderer).x0 and label.get_window_extent(renderer).x1 <= width for label in labels)


def test_histogram_axis_follows_the_score_ranges() -> None:
    frame = predictions()
    frame["anomaly_score"] = np.exp(frame["anomaly_score"])
    frame.loc[frame["domain"] == "domain_C", "anomaly_score"] *= 1000.0  # a domain shifted by orders of magnitude
    figure = histogram_figure(frame, float(np.exp(THRESHOLD)), ["domain_A"])
    assert figure.axes[2].get_xscale() == "log" and figure.axes[2].get_xlim()[1] > 1000
    assert [line.get_xdata()[0] for line in figure.axes[2].get_lines()] == [pytest.approx(np.exp(THRESHOLD))]

    frame.loc[frame["domain"] == "domain_C", "anomaly_score"] = 1e6 + frame["anomaly_score"] * 1e-3  # a narrow far cluster
    axes = histogram_figure(frame, float(np.exp(THRESHOLD)), ["domain_A"]).axes[2]
    assert axes.get_xlim() == (0.0, 1.0) and "quantile axis" in axes.get_xlabel()
    assert [label.get_text() for label in axes.get_xticklabels()][-1] == f"{frame['anomaly_score'].max():.4g}"
    assert 0 < axes.get_lines()[0].get_xdata()[0] < 1  # the threshold at its quantile among the test scores


def test_score_scale_decision() -> None:
    rng = np.random.default_rng(0)
    wide, narrow = rng.normal(0, 1, 100), rng.normal(0, 1e-3, 100)
    assert score_scale([wide, wide + 1], 0.5) == "linear"
    assert score_scale([np.exp(wide), 1000 * np.exp(wide)], 1.0) == "log"
    assert score_scale([wide, 100 + narrow], 0.5) == "quantile"  # not positive: no log axis


def panel_pixels(image, block: int, offset: int, rank: int, shape: tuple[int, int]) -> np.ndarray:
    """The RGB bytes of one panel of an anomaly-map grid picture."""
    (x, y), (width, height) = panel_corner(block, offset, rank, panel_size(shape)), panel_size(shape)
    return np.asarray(image)[y:y + height, x:x + width]


def test_example_grid_panels() -> None:
    kept = examples(4)
    image = example_grid_image("domain_B", kept, n_examples=4)
    panel = panel_size((16, 48))
    assert panel == (PANEL_WIDTH, round(PANEL_WIDTH / 3))
    texts = [text for _, _, text, _ in grid_texts(kept, 4, panel)]
    assert texts[:4] == ["input", "highest-scoring faults", "anomaly map", "overlay"]
    assert texts[4:8] == ["0.tiff", "score 0", "1.tiff", "score 1"]  # file name under the input, score under the map
    assert "lowest-scoring faults" in texts and "highest-scoring normals" in texts and len(texts) == 3 * (4 + 2 * 4)
    maps = [e.anomaly_map for category in kept.values() for e in category]
    first = kept["highest-scoring faults"][0]
    expected = to_bytes(MAP_COLOURS(map_norm(maps)(first.anomaly_map))[..., :3])  # one colour scale for every map
    def enlarged(pixels: np.ndarray) -> np.ndarray:  # nearest-neighbour: every map pixel a sharp block
        return np.asarray(Image.fromarray(pixels).resize(panel, Image.Resampling.NEAREST))

    np.testing.assert_array_equal(panel_pixels(image, 0, 1, 0, (16, 48)), enlarged(expected))
    grey = panel_pixels(image, 0, 0, 0, (16, 48))[..., 0].ravel().astype(float)
    assert np.corrcoef(grey, enlarged(to_bytes(first.image)).ravel())[0, 1] > 0.99  # the input, in grey
    between = np.asarray(image)[PANELS_TOP + panel[1] + LABEL_ROWS - 2, MARGIN:MARGIN + PANEL_WIDTH]
    assert (between == 255).all()  # white between rows, below the labels
    width = np.asarray(image).shape[1]
    assert width > panel_corner(2, 3, 0, panel)[0] + 40  # room for the colour bar to the right of the panels


def test_map_colour_scale_ignores_extreme_pixels() -> None:
    maps = [np.full((10, 30), 0.5) for _ in range(3)]
    maps[0][4, 5:25] = 0.9  # a fault line
    maps[1][0, 0] = 50.0  # one extreme pixel: with min/max every other pixel would be one colour
    norm = map_norm(maps)
    assert norm.vmax < 1.0 and norm.vmin == 0.5 and norm(0.9) > 0.9
    tied = map_norm([np.zeros((4, 4))])
    assert tied.vmax > tied.vmin


def test_example_grid_with_few_examples_or_no_maps() -> None:
    kept = examples(2, with_maps=False)
    image = example_grid_image("domain_C", kept, n_examples=4)
    with_maps = example_grid_image("domain_C", examples(2), n_examples=4)
    assert image.width < with_maps.width  # no colour bar without maps
    assert len(grid_texts(kept, 4, panel_size((16, 48)))) == 3 * 4 + 2 * 2 * 3
    assert (panel_pixels(image, 0, 0, 1, (16, 48)) != 255).any()  # the second input is drawn
    assert (panel_pixels(image, 0, 1, 0, (16, 48)) == 255).all() and (panel_pixels(image, 0, 0, 2, (16, 48)) == 255).all()
    # no map, no overlay; no third example


def test_example_grid_stretches_a_map_of_another_size() -> None:
    kept = {category: [Example(1.0, 1, "/x/0.tiff", np.zeros((16, 48)), np.arange(8 * 24.0).reshape(8, 24))]
            for category in EXAMPLE_CATEGORIES}
    image = example_grid_image("domain_D", kept, n_examples=1)
    for offset in (1, 2):  # map and overlay fill the panel: the map's highest values reach its right edge
        pixels = panel_pixels(image, 0, offset, 0, (16, 48))
        assert (pixels != 255).any(axis=2).all() and pixels[-1, -1].sum() > pixels[0, 0].sum()


def test_write_plots_writes_valid_pngs(tmp_path: Path) -> None:
    pictures = write_plots(tmp_path / "plots", predictions(), THRESHOLD, ["domain_A"],
                           {"domain_A": examples(4), "domain_B": examples(4, shape=(32, 32))}, n_examples=4)
    assert set(pictures) == {"roc", "score_histograms", "anomaly_maps_domain_A", "anomaly_maps_domain_B"}
    for path in pictures.values():
        assert path.parent == tmp_path / "plots"
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG"
    with Image.open(pictures["score_histograms"]) as image:
        width, height = image.size
    assert height > width / 2  # three domains stacked on one score axis


def test_tensorboard_gets_domain_scalars_pictures_and_hparams(tmp_path: Path) -> None:
    frame = predictions()
    record = record_for(frame)
    logger = TensorBoardLogger(str(tmp_path), name="tensorboard", version="", default_hp_metric=False)
    hparams = {"name": "draem_A", "seed": 42, "model": {"name": "draem", "image_size": [32, 96]}}
    log_to_tensorboard(logger, record, hparams, step=7)
    pictures = write_pictures(tmp_path / "plots", tmp_path / "tensorboard", 7, frame, THRESHOLD, ["domain_A"],
                              {"domain_A": examples(2)}, n_examples=2)
    assert len(list((tmp_path / "tensorboard").glob("*.pictures"))) == 1  # the pictures' own event file

    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert set(metric_scalars(record)) | {"hp_metric", *HPARAM_METRICS.values()} == scalars
    assert {"test/domain_C/image_AUROC", "test/domain_C/warm/image_F1Score", "test/domain_A/oracle_F1Score",
            "test/avg_target_auroc", "test/hmean_target_auroc", "test/hmean_auroc", "test/transfer_ratio", "test/threshold",
            "test/domain_B/image_pAUC_FPR_10pct", "test/domain_C/warm/image_pAUC_FPR_10pct"} <= scalars
    assert not any(tag.endswith(("n_samples", "/domain")) for tag in scalars)
    auroc = events.Scalars("test/domain_C/image_AUROC")[0]
    assert auroc.step == 7 and auroc.value == pytest.approx(record["target_results"]["domain_C"]["image_AUROC"])
    assert events.Scalars("hp_metric")[0].value == pytest.approx(record["avg_target_auroc"])
    assert {f"plots/{name}" for name in pictures} == set(events.Tags()["images"])
    picture = events.Images("plots/roc")[0]
    with Image.open(pictures["roc"]) as image:
        assert (picture.width, picture.height, picture.step) == (*image.size, 7)
    assert picture.encoded_image_string == pictures["roc"].read_bytes()
    hparams_content = events.PluginTagToContent("hparams")
    assert b"hp_metric" in hparams_content["_hparams_/experiment"]

    assert b"model/image_size" in hparams_content["_hparams_/session_start_info"]
    assert b"data/manifest_sha256" in hparams_content["_hparams_/session_start_info"]
    assert all(tag.encode() in hparams_content["_hparams_/experiment"] for tag in HPARAM_METRICS.values())
    assert events.Scalars("hparams/transfer_ratio")[0].value == pytest.approx(record["transfer_ratio"])
    assert "name: draem" in (tmp_path / "tensorboard" / "hparams.yaml").read_text()


def test_histogram_of_nearly_constant_float32_scores() -> None:
    """A barely trained model can give (almost) tied float32 scores; the histogram must still draw."""
    from hdmap_train.run_plots import score_bin_edges

    edges = score_bin_edges(np.float32(0.99999994), np.float32(1.0), 30)
    assert len(edges) == 31 and np.all(np.diff(edges) > 0)
    frame = predictions()
    frame["anomaly_score"] = np.where(frame.index % 3 == 0, np.float32(0.99999994), np.float32(1.0))
    assert len(histogram_figure(frame, 1.0, ["domain_A"]).axes) == 3

