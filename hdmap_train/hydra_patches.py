"""Each sweep job's config composed once, not twice (ComposeEachJobOnce, a Hydra callback).

Hydra's sweeper composes every job's config to check the batch before launching it, and the launcher
composes each job's config again when it runs the job: about 0.15 s per composition on 2 CPU cores, a
tenth of a small CPU job. While a multirun runs, the configs composed for the check are kept (at most
MAX_KEPT per batch) and handed to the launcher when it asks for the same job in this process, with the
sweep config's resolver cache copied into it at that moment (as Hydra does): exactly what composing it
again returns. A launcher composing in other processes (joblib with n_jobs > 1, submitit) composes as
before; the kept configs are dropped at the next batch. Hydra's own methods are back once the multirun ends.
"""

from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.experimental.callback import Callback
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

MAX_KEPT = 64  # a composed config holds about 0.4 MB

_kept: dict[tuple[str, ...], list[tuple[DictConfig, DictConfig]]] = {}  # overrides -> [(sweep config, job config)]
_checking = False  # True while the sweeper checks a batch


def _check_batch(sweeper: Sweeper, batch) -> None:
    """Sweeper.validate_batch_is_legal, keeping the configs it composes."""
    global _checking
    _kept.clear()
    _checking = True
    try:
        _compose_batch(sweeper, batch)
    finally:
        _checking = False


def _load_sweep_config(loader: ConfigLoaderImpl, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
    """ConfigLoaderImpl.load_sweep_config: a config kept from the batch check when there is one for this job."""
    key = tuple(sweep_overrides)
    if not _checking:
        for index, (master, config) in enumerate(_kept.get(key, [])):
            if master is master_config:
                del _kept[key][index]
                OmegaConf.copy_cache(from_config=master_config, to_config=config)
                return config
        return _compose_job(loader, master_config, sweep_overrides)
    config = _compose_job(loader, master_config, sweep_overrides)
    if sum(map(len, _kept.values())) < MAX_KEPT:
        _kept.setdefault(key, []).append((master_config, config))
    return config


_compose_batch = Sweeper.validate_batch_is_legal
_compose_job = ConfigLoaderImpl.load_sweep_config


class ComposeEachJobOnce(Callback):
    """While a multirun runs, the sweeper's batch check and the launcher share each job's composed config."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        del config, kwargs
        Sweeper.validate_batch_is_legal = _check_batch
        ConfigLoaderImpl.load_sweep_config = _load_sweep_config

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        del config, kwargs
        _kept.clear()
        Sweeper.validate_batch_is_legal = _compose_batch
        ConfigLoaderImpl.load_sweep_config = _compose_job
