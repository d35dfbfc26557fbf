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
from omegaconf import DictConfig, OmegaConf, open_dict

from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule, domain_folder
from hdmap_train.data.synthetic import SyntheticSpec, ensure_dataset
from hdmap_train.devices import job_devices
from hdmap_train.errors import HdmapError
from hdmap_train.evaluation import PredictionCollector, evaluate_domains, transfer_ratio
from hdmap_train.models import build_model
from hdmap_train.reporting import log_to_tensorboard, run_hparams, write_plots
from hdmap_train.results import package_versions, print_results, write_csv_atomic, write_json_atomic
from hdmap_train.run_dir import check_checkpoint, earlier_attempt

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class RunEngine(Engine):
    """anomalib's Engine, writing into the run directory itself.

    Engine would add <root>/<Model>/<dataset>/<category>/vN/ below default_root_dir; hdmap_train keeps
    one flat run directory (metrics.json, checkpoints/, tensorboard/) instead.
    """

    def _setup_workspace(self, *args, **kwargs) -> None:
        del args, kwargs


class TrainingHistory(Callback):
    """Per-epoch train_loss / val_loss means, training images seen, and fit time, kept across resumes.

    The state travels in every checkpoint (Lightning saves callback state), so a run resumed from
    last.ckpt reports the whole history and the total fit time of all its attempts.
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
        self.images_per_epoch: list[int] = []
        self.earlier_fit_seconds = 0.0  # fit time of the attempts before this one (from the checkpoint)
        self.attempts = 1
        self._started, self._stopped = time.perf_counter(), None
        self._images = 0

    @property
    def fit_seconds(self) -> float:
        """Fit time of every attempt so far (up to the end of fit, once it ended)."""
        return self.earlier_fit_seconds + (self._stopped or time.perf_counter()) - self._started

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        del trainer, pl_module
        self._started, self._stopped = time.perf_counter(), None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        del trainer, pl_module
        self._stopped = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        del trainer, pl_module
        self._images = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        del trainer, pl_module, outputs, batch_idx
        self._images += len(batch.image)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        del pl_module
        self.images_per_epoch.append(self._images)
        for name, values in self.history.items():
            value = trainer.callback_metrics.get(f"{name}_epoch", trainer.callback_metrics.get(name))
            if value is not None:
                values.append(float(value))

    def state_dict(self) -> dict:
        return {"history": self.history, "images_per_epoch": self.images_per_epoch, "fit_seconds": self.fit_seconds,
                "attempts": self.attempts}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = {name: list(values) for name, values in state_dict["history"].items()}
        self.images_per_epoch = list(state_dict["images_per_epoch"])
        self.earlier_fit_seconds = float(state_dict["fit_seconds"])
        self.attempts = int(state_dict["attempts"]) + 1


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
    # Saved at the end of each training epoch, after TrainingHistory recorded it (ModelCheckpoint runs last),
    # so a checkpoint's history includes its own epoch.
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode=mode, save_last=monitor is not None,
        auto_insert_metric_name=False, save_on_train_epoch_end=True,
    )
    callbacks: list[Callback] = [checkpoint, TrainingHistory()]
    if monitor is not None:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=cfg.model.early_stopping_patience))
    return checkpoint, callbacks


def training_info(cfg: DictConfig, engine: Engine, history: TrainingHistory) -> dict:
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
        "train_images_per_epoch": history.images_per_epoch,  # images the model saw (every training image)
        "fit_seconds": round(history.fit_seconds, 3),  # all attempts together (a resumed run adds its parts)
        "attempts": history.attempts,
        # memory-bank models that time their fit phases (HDMAPPatchcore)
        "fit_phase_seconds": {k: round(v, 3) for k, v in getattr(engine.model, "fit_phase_seconds", {}).items()} or None,
    }


def predict_all(engine: Engine, model: L.LightningModule, datamodule: MultiDomainHDMAPDataModule, ckpt: str) -> PredictionCollector:
    """Predict validation and every test set with the best checkpoint, streaming scores into a collector.

    Predictions are not returned by the trainer (return_predictions=False): only scores and the few
    grid examples per domain stay in memory, whatever the test-set size.
    """
    test_loaders = datamodule.test_dataloaders()
    collector = PredictionCollector(["validation", *test_loaders], example_names=list(test_loaders))
    engine.trainer.callbacks.append(collector)
    loaders = [datamodule.val_dataloader(), *test_loaders.values()]
    engine.predict(model=model, dataloaders=loaders, ckpt_path=ckpt, return_predictions=False)
    return collector


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
    engine = None
    try:
        check_config(cfg)
        if cfg.ckpt_path:
            last = run_dir / "checkpoints" / "last.ckpt"
            check_checkpoint(Path(cfg.ckpt_path), "resume" if Path(cfg.ckpt_path) == last else "ckpt_path")
        L.seed_everything(cfg.seed, workers=True)
        datamodule = MultiDomainHDMAPDataModule.from_config(
            cfg.data, root=dataset_root(cfg), source=cfg.domain.source, targets=list(cfg.domain.targets), seed=cfg.seed
        )
        datamodule.setup()
        record["data"] = datamodule.summary()  # incl. the dataset's manifest reference (path, sha256, mapping)
        model = build_model(cfg.model)
        checkpoint, callbacks = build_callbacks(cfg, run_dir)
        engine = RunEngine(
            default_root_dir=run_dir,
            logger=AnomalibTensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False),
            callbacks=callbacks,
            **OmegaConf.to_container(cfg.trainer, resolve=True),
        )

        engine.fit(model=model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        record["training_info"] = training_info(cfg, engine, callbacks[1])
        best = checkpoint.best_model_path
        if not best:
            raise RuntimeError("Training saved no checkpoint (no completed epoch?); nothing to evaluate.")
        record["best_checkpoint"] = best

        start = time.perf_counter()
        collector = predict_all(engine, model, datamodule, best)
        record["training_info"]["test_seconds"] = round(time.perf_counter() - start, 3)

        test_samples = {domain: dataset.samples for domain, dataset in datamodule.test_data.items()}
        threshold, predictions, results = evaluate_domains(collector, test_samples, cfg.evaluation.threshold_quantile)
        record["validation"] = {"threshold_quantile": cfg.evaluation.threshold_quantile, "threshold": threshold}
        record["source_results"] = results.pop(datamodule.source)
        record["target_results"] = results
        target_aurocs = [r["image_AUROC"] for r in results.values() if r["image_AUROC"] is not None]
        record["avg_target_auroc"] = float(np.mean(target_aurocs)) if target_aurocs else None
        record["transfer_ratio"] = transfer_ratio(record["source_results"]["image_AUROC"], record["avg_target_auroc"])

        start = time.perf_counter()
        write_csv_atomic(run_dir / "predictions.csv", predictions)
        pictures = {}
        if cfg.evaluation.plots:
            pictures = write_plots(run_dir / "plots", predictions, threshold, datamodule.source, collector.examples, collector.n_examples)
        log_to_tensorboard(engine.trainer.logger, record, pictures, run_hparams(cfg), engine.trainer.global_step)
        record["training_info"]["report_seconds"] = round(time.perf_counter() - start, 3)
        record["status"] = "success"
    except (KeyboardInterrupt, SystemExit) as exc:  # Lightning turns Ctrl-C during fit into SystemExit(1)
        if isinstance(exc, SystemExit) and not (engine is not None and engine.trainer.interrupted):
            record["error"] = f"SystemExit: {exc}"
            raise
        interrupted = interruption_message(run_dir, engine)
        record["error"] = interrupted
        raise HdmapError(interrupted) from None
    except BaseException as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        write_json_atomic(run_dir / "metrics.json", record)
    print_results(record)
    return record


def interruption_message(run_dir: Path, engine: Engine | None) -> str:
    """What an interrupted run says: when it stopped and how to resume it."""
    if engine is None or not (run_dir / "checkpoints" / "last.ckpt").is_file():
        return "Interrupted (Ctrl-C) before a training epoch was saved; run the command again to start over."
    return (
        f"Interrupted (Ctrl-C) during training after epoch {engine.trainer.current_epoch}. To resume, run the same "
        f"command with hydra.run.dir={run_dir} (it continues from checkpoints/last.ckpt)."
    )


def metric_value(record: dict, key: str) -> float | None:
    """The value of a dotted metrics.json key (cfg.optimized_metric) in a run record."""
    value = record
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise HdmapError(
                f"optimized_metric={key} is not a key of metrics.json: use e.g. avg_target_auroc, "
                "source_results.image_AUROC or target_results.domain_B.image_F1Score."
            )
        value = value[part]
    return None if value is None else float(value)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Entry point of `python -m hdmap_train`; in a sweep, returns cfg.optimized_metric (for sweepers).

    A run directory that already holds a successful run of the same config is not trained again (so a
    sweep re-run into its sweep dir skips finished jobs); one holding checkpoints/last.ckpt resumes from it.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        record, resume_from = earlier_attempt(cfg, run_dir)
        if record is not None:
            log.info("Already done, not trained again: %s", run_dir / "metrics.json")
        else:
            if resume_from and cfg.ckpt_path is None:
                log.info("Resuming training from %s", resume_from)
                with open_dict(cfg):
                    cfg.ckpt_path = resume_from
            with job_devices(hydra_cfg, cfg.gpus_per_job):
                record = run(cfg, run_dir)
        return metric_value(record, cfg.optimized_metric) if hydra_cfg.mode == RunMode.MULTIRUN else None
    except HdmapError as exc:
        log.error("%s", exc)
    except Exception:
        log.exception("Run failed; details in %s", run_dir / "train.log")
    if hydra_cfg.mode == RunMode.RUN:
        sys.exit(1)
    return None  # in a sweep, the failed job is recorded in its metrics.json and the sweep goes on
