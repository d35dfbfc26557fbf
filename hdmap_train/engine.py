"""The training engine of a run: anomalib's Engine in the run directory, its callbacks, fit and prediction."""

from pathlib import Path

import lightning as L
from anomalib.callbacks import ModelCheckpoint
from anomalib.engine import Engine
from anomalib.loggers import AnomalibTensorBoardLogger
from lightning.pytorch.callbacks import Callback, EarlyStopping
from omegaconf import DictConfig, OmegaConf

from hdmap_train.callbacks import PredictionCollector, TrainingHistory
from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule
from hdmap_train.efficiency import StepTimer
from hdmap_train.outputs import checksum_tensorboard_records_in_c


class RunEngine(Engine):
    """anomalib's Engine, writing into the run directory itself.

    Engine would add <root>/<Model>/<dataset>/<category>/vN/ below default_root_dir; hdmap_train keeps
    one flat run directory (metrics.json, checkpoints/, tensorboard/) instead.
    """

    def _setup_workspace(self, *args, **kwargs) -> None:
        del args, kwargs


def training_progress(trainer: L.Trainer) -> tuple[int, int, int]:
    """Optimizer steps, training batches and validation batches so far: what can change a model's weights or state."""
    loop = trainer.fit_loop.epoch_loop
    return trainer.global_step, loop.batch_progress.total.completed, loop.val_loop.batch_progress.total.completed


class RunCheckpoint(ModelCheckpoint):
    """anomalib's ModelCheckpoint, remembering the training progress at which this process saved the best checkpoint."""

    best_saved_at: tuple[int, int, int] | None = None

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if filepath == self.best_model_path:
            self.best_saved_at = training_progress(trainer)

    def holds_best(self, trainer: L.Trainer) -> bool:
        """Whether the weights in memory are the best checkpoint: saved by this process, no training since then."""
        return self.best_saved_at is not None and self.best_saved_at == training_progress(trainer)


def build_callbacks(cfg: DictConfig, run_dir: Path) -> tuple[RunCheckpoint, list[Callback]]:
    """Best-checkpoint (+ early stopping) on the model's monitor; memory-bank models keep their one epoch."""
    monitor, mode = cfg.model.monitor, cfg.model.monitor_mode
    # Saved at the end of each training epoch, after TrainingHistory recorded it (ModelCheckpoint runs last),
    # so a checkpoint's history includes its own epoch.
    checkpoint = RunCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode=mode, save_last=monitor is not None,
        auto_insert_metric_name=False, save_on_train_epoch_end=True,
    )
    callbacks: list[Callback] = [checkpoint, TrainingHistory()]
    if monitor is not None:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=cfg.model.early_stopping_patience))
    return checkpoint, callbacks


def build_engine(cfg: DictConfig, run_dir: Path) -> tuple[RunEngine, RunCheckpoint, TrainingHistory]:
    """The Engine with the trainer config, TensorBoard in run_dir/tensorboard, and the run's callbacks."""
    checkpoint, callbacks = build_callbacks(cfg, run_dir)
    checksum_tensorboard_records_in_c()
    engine = RunEngine(
        default_root_dir=run_dir,
        logger=AnomalibTensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False),
        callbacks=callbacks,
        **OmegaConf.to_container(cfg.trainer, resolve=True),
    )
    return engine, checkpoint, callbacks[1]


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
    test_loaders = datamodule.test_dataloaders()
    collector = PredictionCollector(["validation", *test_loaders], example_names=list(test_loaders))
    engine._setup_trainer(model)  # what predict() does first; an engine that never fitted (evaluate) has no trainer yet
    engine.trainer.callbacks.extend([StepTimer(), collector])
    loaders = [datamodule.val_dataloader(), *test_loaders.values()]
    engine.predict(model=model, dataloaders=loaders, ckpt_path=ckpt, return_predictions=False)
    return collector
