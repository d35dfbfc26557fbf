"""A Lightning callback added from the command line in the config-group tests: it leaves a file when fitting ends."""

from pathlib import Path

from lightning.pytorch.callbacks import Callback


class FitMarker(Callback):
    """Writes `path` at the end of fit, with the number of epochs trained."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_fit_end(self, trainer, pl_module) -> None:  # noqa: ANN001 - Lightning's hook
        del pl_module
        self.path.write_text(str(trainer.current_epoch))
