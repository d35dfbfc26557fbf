"""The run: train on the source domain, evaluate the best checkpoint on every domain, write metrics.json."""

import logging
import sys
import time
from datetime import datetime
from pathlib import Path

import hydra
import lightning as L
import numpy as np
from anomalib.callbacks import ModelCheckpoint
from anomalib.engine import Engine
from anomalib.loggers import AnomalibTensorBoardLogger
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import Callback, EarlyStopping
from omegaconf import DictConfig, OmegaConf

from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule, domain_folder
from hdmap_train.data.synthetic import SyntheticSpec, ensure_dataset
from hdmap_train.errors import HdmapError
from hdmap_train.evaluation import Scores, domain_metrics, validation_threshold
from hdmap_train.models import build_model
from hdmap_train.results import package_versions, print_results, write_json_atomic

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class RunEngine(Engine):
    """anomalib's Engine, writing into the run directory itself.

    Engine would add <root>/<Model>/<dataset>/<category>/vN/ below default_root_dir; hdmap_train keeps
    one flat run directory (metrics.json, checkpoints/, tensorboard/) instead.
    """

    def _setup_workspace(self, *args, **kwargs) -> None:
        del args, kwargs


class LossHistory(Callback):
    """Epoch means of train_loss and val_loss, for metrics.json (did the loss decrease?)."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        del pl_module
        for name, values in self.history.items():
            value = trainer.callback_metrics.get(f"{name}_epoch", trainer.callback_metrics.get(name))
            if value is not None:
                values.append(float(value))


def check_config(cfg: DictConfig) -> None:
    """Reject invalid values before anything runs, naming the key and the fix."""
    problems = []
    if not (isinstance(cfg.trainer.max_epochs, int) and cfg.trainer.max_epochs >= 1):
        problems.append(f"trainer.max_epochs={cfg.trainer.max_epochs} must be a positive integer (model.max_epochs sets it)")
    if not 0.0 < float(cfg.data.val_fraction) < 1.0:
        problems.append(f"data.val_fraction={cfg.data.val_fraction} must lie strictly between 0 and 1 (e.g. 0.1)")
    if not 0.0 < float(cfg.evaluation.threshold_quantile) <= 1.0:
        problems.append(f"evaluation.threshold_quantile={cfg.evaluation.threshold_quantile} must be in (0, 1]")
    for key in ("train_batch_size", "eval_batch_size"):
        if not int(cfg.data[key]) >= 1:
            problems.append(f"data.{key}={cfg.data[key]} must be at least 1")
    size = cfg.data.image_size
    if len(size) != 2 or any(int(s) < 1 for s in size):
        problems.append(f"data.image_size={list(size)} must be [height, width] with positive integers")
    if cfg.model.monitor_mode not in ("min", "max"):
        problems.append(f"model.monitor_mode={cfg.model.monitor_mode} must be 'min' (a loss) or 'max' (e.g. an AUROC)")
    if cfg.model.monitor is not None and not int(cfg.model.early_stopping_patience or 0) >= 1:
        problems.append(f"model.early_stopping_patience={cfg.model.early_stopping_patience} must be at least 1")
    if problems:
        raise HdmapError("Invalid configuration: " + "; ".join(problems) + ".")


def dataset_root(cfg: DictConfig) -> Path:
    """data.root, or the synthetic dataset generated once into paths.cache_dir."""
    if cfg.data.synthetic is not None:
        spec = SyntheticSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in OmegaConf.to_container(cfg.data.synthetic).items()})
        return ensure_dataset(spec, Path(cfg.paths.cache_dir))
    if not cfg.data.root:
        raise HdmapError("data.root is not set. Pass data.root=<dir> (or set HDMAP_ROOT), or use data=synthetic.")
    return Path(cfg.data.root).expanduser()


def build_callbacks(cfg: DictConfig, run_dir: Path) -> tuple[ModelCheckpoint, list[Callback]]:
    """Best-checkpoint (+ early stopping) on the model's monitor; memory-bank models keep their one epoch."""
    monitor, mode = cfg.model.monitor, cfg.model.monitor_mode
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode=mode, save_last=monitor is not None,
        auto_insert_metric_name=False,
    )
    callbacks: list[Callback] = [checkpoint, LossHistory()]
    if monitor is not None:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=cfg.model.early_stopping_patience))
    return checkpoint, callbacks


def training_info(cfg: DictConfig, engine: Engine, history: LossHistory, fit_seconds: float) -> dict:
    """How training ended, for metrics.json."""
    trainer = engine.trainer
    stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
    early_stopped = bool(stopper and stopper.stopped_epoch > 0)
    if early_stopped:
        completion = "early_stopping"
    elif trainer.current_epoch >= cfg.trainer.max_epochs:
        completion = "max_epochs_reached"
    else:
        completion = "interrupted"
    return {
        "max_epochs_configured": cfg.trainer.max_epochs,
        "last_trained_epoch": trainer.current_epoch,
        "total_steps": trainer.global_step,
        "early_stopped": early_stopped,
        "monitor": cfg.model.monitor,
        "best_monitor_value": float(stopper.best_score) if stopper else None,
        "completion_type": completion,
        "train_loss_per_epoch": history.history["train_loss"],
        "val_loss_per_epoch": history.history["val_loss"],
        "fit_seconds": round(fit_seconds, 3),
    }


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train on cfg.domain.source, evaluate on it and each target, write run_dir/metrics.json.

    The record is written with status "success" only after every step worked; any exception writes it
    with status "failed" and the error, then propagates.
    """
    record: dict = {
        "condition": {"name": cfg.name, "model": cfg.model.name, "config": OmegaConf.to_container(cfg, resolve=True)},
        "status": "failed",
        "error": None,
        "source_domain": domain_folder(cfg.domain.source),
        "experiment_path": str(run_dir),
        "timestamp": datetime.now().isoformat(timespec="seconds"),
        "versions": package_versions(),
    }
    try:
        check_config(cfg)
        L.seed_everything(cfg.seed, workers=True)
        datamodule = MultiDomainHDMAPDataModule(
            root=dataset_root(cfg),
            source=cfg.domain.source,
            targets=list(cfg.domain.targets),
            image_size=tuple(cfg.data.image_size),
            val_fraction=cfg.data.val_fraction,
            train_batch_size=cfg.data.train_batch_size,
            eval_batch_size=cfg.data.eval_batch_size,
            num_workers=cfg.data.num_workers,
            cache_limit_mb=cfg.data.cache_limit_mb,
            seed=cfg.seed,
        )
        datamodule.setup()
        record["data"] = datamodule.summary()
        model = build_model(cfg.model)
        checkpoint, callbacks = build_callbacks(cfg, run_dir)
        engine = RunEngine(
            default_root_dir=run_dir,
            logger=AnomalibTensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False),
            callbacks=callbacks,
            **OmegaConf.to_container(cfg.trainer, resolve=True),
        )

        start = time.perf_counter()
        engine.fit(model=model, datamodule=datamodule)
        record["training_info"] = training_info(cfg, engine, callbacks[1], time.perf_counter() - start)
        best = checkpoint.best_model_path
        if not best:
            raise RuntimeError("Training saved no checkpoint (no completed epoch?); nothing to evaluate.")
        record["best_checkpoint"] = best

        start = time.perf_counter()
        loaders = {"validation": datamodule.val_dataloader(), **datamodule.test_dataloaders()}
        outputs = engine.predict(model=model, dataloaders=list(loaders.values()), ckpt_path=best)
        scores = {name: Scores.from_batches(batches) for name, batches in zip(loaders, outputs, strict=True)}
        record["training_info"]["test_seconds"] = round(time.perf_counter() - start, 3)

        threshold = validation_threshold(scores.pop("validation"), cfg.evaluation.threshold_quantile)
        results = {domain: domain_metrics(domain, domain_scores, threshold) for domain, domain_scores in scores.items()}
        record["validation"] = {"threshold_quantile": cfg.evaluation.threshold_quantile, "threshold": threshold}
        record["source_results"] = results.pop(datamodule.source)
        record["target_results"] = results
        target_aurocs = [r["image_AUROC"] for r in results.values() if r["image_AUROC"] is not None]
        record["avg_target_auroc"] = float(np.mean(target_aurocs)) if target_aurocs else None
        record["status"] = "success"
    except BaseException as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        write_json_atomic(run_dir / "metrics.json", record)
    print_results(record)
    return record


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Entry point of `python -m hdmap_train`; returns the average target AUROC (for sweepers)."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        record = run(cfg, run_dir)
    except HdmapError as exc:
        log.error("%s", exc)
    except Exception:
        log.exception("Run failed; details in %s", run_dir / "train.log")
    else:
        return record["avg_target_auroc"]
    if hydra_cfg.mode == RunMode.RUN:
        sys.exit(1)
    return None  # in a sweep, the failed job is recorded in its metrics.json and the sweep goes on
