"""The private hooks of anomalib and Lightning that hdmap_train overrides, in one place. Both are for correctness,
not speed; each has a test that fails loudly when the library changes under it (tests/test_library_patches.py).

- `RunEngine._setup_workspace` (anomalib's Engine): the Engine would add <root>/<Model>/<dataset>/<category>/vN/
  below default_root_dir; hdmap_train keeps one flat run directory (metrics.json, checkpoints/, tensorboard/). anomalib
  has no public switch for it.
- `RunCheckpoint._save_checkpoint` (Lightning's ModelCheckpoint): remembers the training progress at which the best
  checkpoint was saved, so a run knows whether the weights in memory are the best ones (and need no reload before
  predicting). Lightning has no public hook after a save; without it every run reloads (slower, never wrong).

Hydra's one private method patched (each sweep job composed once) is in hdmap_train.hydra_patches: that module is
imported at every start, before any heavy import, so the two cannot share a module.
"""

import lightning as L
from anomalib.callbacks import ModelCheckpoint
from anomalib.engine import Engine


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
