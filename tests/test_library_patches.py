"""The private hooks hdmap_train overrides (hdmap_train.engine_patches, hdmap_train.hydra_patches,
hdmap_train.export_patches) still exist with the signatures it relies on, and the libraries still call them: an
upgrade that changes them fails here, loudly."""

import inspect

from anomalib.callbacks import ModelCheckpoint
from anomalib.engine import Engine
from anomalib.models.image.patchcore.torch_model import PatchcoreModel
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.plugins.sweeper import Sweeper
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_anomalibs_engine_still_sets_up_its_workspace_through_the_hook_run_engine_overrides() -> None:
    assert callable(Engine._setup_workspace)
    assert "self._setup_workspace(" in inspect.getsource(Engine)


def test_lightnings_checkpoint_still_saves_through_the_hook_run_checkpoint_overrides() -> None:
    assert issubclass(ModelCheckpoint, LightningModelCheckpoint)
    assert parameters(LightningModelCheckpoint._save_checkpoint) == ["self", "trainer", "filepath"]
    assert "self._save_checkpoint(" in inspect.getsource(LightningModelCheckpoint)


def test_hydras_two_methods_that_compose_once_replaces_keep_their_signatures() -> None:
    assert parameters(ConfigLoaderImpl.load_sweep_config) == ["self", "master_config", "sweep_overrides"]
    assert parameters(Sweeper.validate_batch_is_legal) == ["self", "batch"]


def test_patchcores_search_that_export_friendly_replaces_keeps_its_signature_and_callers() -> None:
    assert parameters(PatchcoreModel.nearest_neighbors) == ["self", "embedding", "n_neighbors"]
    assert "self.nearest_neighbors(" in inspect.getsource(PatchcoreModel.forward)
    assert "self.nearest_neighbors(" in inspect.getsource(PatchcoreModel.compute_anomaly_score)
    assert "euclidean_dist" in inspect.getsource(PatchcoreModel.nearest_neighbors)  # the distance it keeps
