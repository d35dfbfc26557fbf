"""What a run leaves for people after evaluation: pictures under plots/ and TensorBoard scalars, images, hparams."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from hdmap_train.evaluation import Example
from hdmap_train.plots import example_grid_figure, histogram_figure, roc_figure, save_figure

NOT_SCALARS = ("domain", "threshold", "n_samples", "n_normal", "n_fault", "subgroups")


def write_plots(
    plots_dir: Path, predictions: pd.DataFrame, threshold: float, source: str,
    examples: dict[str, dict[str, list[Example]]], n_examples: int,
) -> dict[str, Path]:
    """roc.png, score_histograms.png and anomaly_maps_<domain>.png; returns {name: path}."""
    pictures = {
        "roc": save_figure(roc_figure(predictions, threshold, source), plots_dir / "roc.png"),
        "score_histograms": save_figure(histogram_figure(predictions, threshold, source), plots_dir / "score_histograms.png"),
    }
    for domain, kept in examples.items():
        figure = example_grid_figure(domain, kept, n_examples)
        pictures[f"anomaly_maps_{domain}"] = save_figure(figure, plots_dir / f"anomaly_maps_{domain}.png")
    return pictures


def metric_scalars(record: dict) -> dict[str, float]:
    """test/<domain>/<metric> (and test/<domain>/<subgroup>/<metric>), avg target AUROC, transfer ratio, threshold."""
    scalars: dict[str, float] = {}
    for result in [record["source_results"], *record["target_results"].values()]:
        groups = {"": result, **{f"{name}/": sub for name, sub in result.get("subgroups", {}).items()}}
        for prefix, metrics in groups.items():
            scalars.update({
                f"test/{result['domain']}/{prefix}{key}": value
                for key, value in metrics.items() if key not in NOT_SCALARS and value is not None
            })
    extra = {"avg_target_AUROC": record["avg_target_auroc"], "transfer_ratio": record["transfer_ratio"],
             "threshold": record["validation"]["threshold"]}
    scalars.update({f"test/{key}": value for key, value in extra.items() if value is not None})
    return scalars


def run_hparams(cfg: DictConfig) -> dict:
    """The settings that tell runs apart in TensorBoard's HParams tab (Lightning flattens them to model/...)."""
    keep = ("model", "domain", "evaluation")
    return {
        "name": cfg.name,
        "seed": cfg.seed,
        **{key: OmegaConf.to_container(cfg[key], resolve=True) for key in keep},
        "data": {"image_size": list(cfg.data.image_size), "val_fraction": cfg.data.val_fraction},
    }


def log_to_tensorboard(
    logger: TensorBoardLogger, record: dict, pictures: dict[str, Path], hparams: dict, step: int,
) -> None:
    """Per-domain scalars, the pictures, and hparams with hp_metric = avg target AUROC (NaN if undefined)."""
    logger.log_metrics(metric_scalars(record), step)
    for name, path in pictures.items():
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        logger.experiment.add_image(f"plots/{name}", pixels, step, dataformats="HWC")
    average = record["avg_target_auroc"]
    logger.log_hyperparams(hparams, metrics={"hp_metric": math.nan if average is None else average})
    (Path(logger.log_dir) / "hparams.yaml").unlink(missing_ok=True)  # written at fit start; rewritten with these
    logger.finalize("success")  # flush and close the event file, save hparams.yaml
