"""The training engine of a run: anomalib's Engine in the run directory, its callbacks, fit and prediction."""

from pathlib import Path

import lightning as L
import torch
from anomalib.engine import Engine
from anomalib.loggers import AnomalibTensorBoardLogger
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from hdmap_train.callbacks import ConfigStamp, DivergenceCheck, PredictionCollector, TrainingHistory
from hdmap_train.checkpoints import config_stamp, save_atomic
from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule
from hdmap_train.efficiency import StepTimer
from hdmap_train.engine_patches import RunCheckpoint, RunEngine
from hdmap_train.errors import HdmapError
from hdmap_train.mlflow_log import prepare


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed: a full disk never leaves a truncated one (one line instead)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        del storage_options
        save_atomic(checkpoint, path)


def build_callbacks(cfg: DictConfig, run_dir: Path) -> tuple[RunCheckpoint, list[Callback]]:
    """Best-checkpoint (+ early stopping) on the model's monitor, the training history, the divergence check and the
    config stamp of every checkpoint; memory-bank models keep their one epoch.
    """
    monitor, mode = cfg.model.monitor, cfg.model.monitor_mode
    # Saved at the end of each training epoch, after TrainingHistory recorded it (ModelCheckpoint runs last),
    # so a checkpoint's history includes its own epoch.
    checkpoint = RunCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode=mode, save_last=monitor is not None,
        auto_insert_metric_name=False, save_on_train_epoch_end=True,
    )
    stamp = ConfigStamp(config_stamp(OmegaConf.to_container(cfg, resolve=True)))
    callbacks: list[Callback] = [checkpoint, TrainingHistory(), DivergenceCheck(), stamp]
    if monitor is not None:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=cfg.model.early_stopping_patience))
    return checkpoint, callbacks


def run_loggers(cfg: DictConfig, run_dir: Path) -> list:
    """The `logger` group's loggers (an MLFlowLogger's run tagged and given the config: mlflow_log.prepare); HdmapError
    when TensorBoard is not among them (the run writes its metrics, HParams and pictures there).
    """
    loggers = [instantiate(entry) for entry in (cfg.get("logger") or {}).values() if entry is not None]
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            prepare(logger, cfg, run_dir)
    if not any(isinstance(logger, TensorBoardLogger) for logger in loggers):
        raise HdmapError("The logger group has no TensorBoard logger, where every run writes its metrics, HParams and "
                         "pictures: keep logger=tensorboard (or logger.tensorboard) and add others beside it.")
    return loggers


def build_engine(cfg: DictConfig, run_dir: Path, loggers: list | None = None) -> tuple[RunEngine, RunCheckpoint, TrainingHistory]:
    """The Engine with the trainer config, the loggers (default: TensorBoard in run_dir/tensorboard), the run's
    callbacks and the `callbacks` group's.
    """
    checkpoint, callbacks = build_callbacks(cfg, run_dir)
    if loggers is None:
        loggers = [AnomalibTensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)]
    added = [instantiate(entry) for entry in (cfg.get("callbacks") or {}).values() if entry is not None]
    engine = RunEngine(
        default_root_dir=run_dir,
        logger=loggers,
        callbacks=[*callbacks, *added],
        plugins=[AtomicCheckpointIO()],
        **OmegaConf.to_container(cfg.trainer, resolve=True),
    )
    return engine, checkpoint, callbacks[1]


def tensorboard_logger(trainer: L.Trainer) -> TensorBoardLogger:
    """The run's TensorBoard logger among the trainer's loggers."""
    return next(logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger))


def training_info(cfg: DictConfig, engine: Engine, history: TrainingHistory) -> dict:
    """How training ended, for metrics.json."""
    trainer = engine.trainer
    stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
    early_stopped = bool(stopper and stopper.stopped_epoch > 0)
    if early_stopped:
        completion = "early_stopping"
    elif trainer.current_epoch >= trainer.max_epochs:  # anomalib forces 1 for memory-bank models (PatchCore, PaDiM)
        completion = "max_epochs_reached"
    else:
        completion = "interrupted"
    return {
        "max_epochs_configured": cfg.trainer.max_epochs,
        "max_epochs_effective": trainer.max_epochs,  # what the model trained for (memory-bank models: 1)
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
        "coreset_device": getattr(engine.model, "coreset_device", None),  # where PatchCore selected its coreset
    }


def predict_all(
    engine: Engine, model: L.LightningModule, datamodule: MultiDomainHDMAPDataModule, ckpt: str | None,
) -> PredictionCollector:
    """Predict validation and every test set with the checkpoint `ckpt` (None: the model's weights as they are),
    streaming scores into a collector.

    Predictions are not returned by the trainer (return_predictions=False): only scores and the few
    grid examples per domain stay in memory, whatever the test-set size. A StepTimer (before the collector,
    so collecting is not timed) times each batch for hdmap_train.efficiency.run_efficiency.
    """
    collector = PredictionCollector(["validation", *datamodule.test_data], example_names=list(datamodule.test_data))
    engine._setup_trainer(model)  # what predict() does first; an engine that never fitted (evaluate) has no trainer yet
    engine.trainer.callbacks.extend([StepTimer(), collector])
    from anomalib import PrecisionType

    with torch.serialization.safe_globals([PrecisionType]):  # in PatchCore's hyper-parameters (checkpoints.load_model)
        engine.predict(model=model, datamodule=datamodule, ckpt_path=ckpt, return_predictions=False)
    return collector
