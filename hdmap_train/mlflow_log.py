"""MLflow tracking (logger=mlflow): one MLflow run per run; a sweep is one parent run with a child run per job.

The store is a local file store, offline: <run dir>/mlruns for a single run, <sweep dir>/mlruns for a sweep (the
${hdmap_tracking_dir:} resolver of conf/logger/mlflow.yaml). Lightning's MLFlowLogger logs the losses as they come;
`prepare` adds the tags and the composed config as params, `tracking` the metric table, the pictures, metrics.json
and the status (FAILED when metrics.json says failed) however the run ends. hydra_callbacks.SweepSummary opens the
parent run (start_sweep) and closes it with the sweep summary files (end_sweep).

Light: mlflow and Lightning are imported only once a run or sweep tracks with them.
"""

import importlib.util
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from hdmap_train.domains import source_domains, source_label
from hdmap_train.errors import HdmapError

log = logging.getLogger(__name__)
LOGGER_TARGET = "lightning.pytorch.loggers.MLFlowLogger"
PARENT_FILE = ".mlflow_parent_run"  # in the sweep directory: the parent run's id, for every job of the sweep
PARENT_TAG = "mlflow.parentRunId"  # how MLflow nests a run under another
RUN_NAME_TAG = "mlflow.runName"
# MLflow 3 refuses a file store unless asked (it suggests a database); the store here is a folder in the run's.
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def tracking_dir() -> str:
    """Where the store goes: the sweep directory in a multirun, else the run directory (absolute)."""
    hydra_cfg = HydraConfig.get()
    folder = hydra_cfg.sweep.dir if hydra_cfg.mode == RunMode.MULTIRUN else hydra_cfg.runtime.output_dir
    return str(Path(folder).absolute())


OmegaConf.register_new_resolver("hdmap_tracking_dir", tracking_dir, replace=True)


def mlflow_entry(cfg: DictConfig) -> DictConfig | None:
    """The `logger` group's MLFlowLogger entry, or None when the run does not track with MLflow."""
    entries = (cfg.get("logger") or {}).values()
    return next((entry for entry in entries if entry is not None and entry.get("_target_") == LOGGER_TARGET), None)


def require_mlflow(cfg: DictConfig) -> None:
    """HdmapError naming the install command when the config tracks with MLflow and mlflow is not installed."""
    if mlflow_entry(cfg) is not None and importlib.util.find_spec("mlflow") is None:
        raise HdmapError("logger=mlflow needs the mlflow package, which is not installed: pip install -e '.[mlflow]'")


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """A resolved config as MLflow params: dot keys (model.name), lists and scalars as text; Hydra's own block left out."""
    params = {}
    for key, value in config.items():
        if not prefix and key == "hydra":
            continue
        if isinstance(value, dict):
            params.update(flat_params(value, f"{prefix}{key}."))
        else:
            params[f"{prefix}{key}"] = str(value)
    return params


def parent_run_id() -> str | None:
    """The sweep's parent run id (start_sweep) when this is a job of a tracked sweep, else None."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    path = Path(HydraConfig.get().sweep.dir) / PARENT_FILE
    return path.read_text().strip() if path.is_file() else None


def prepare(logger, cfg: DictConfig, run_dir: Path) -> None:
    """Tag the logger's run (name, condition, source, seed, status, parent run in a sweep), create it and log the
    composed config as params.
    """
    from mlflow.entities import Param
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    tags = {"run_dir": str(run_dir.absolute()), "condition": cfg.name, "source": source_label(source_domains(cfg.domain.source)),
            "seed": str(cfg.seed), "status": "running"}
    if (parent := parent_run_id()) is not None:
        tags[PARENT_TAG] = parent
    logger.tags = {RUN_NAME_TAG: run_dir.name, **(logger.tags or {}), **tags}  # run_name, when set, names it instead
    config = OmegaConf.to_container(cfg, resolve=True)
    params = [Param(key, value[:MAX_PARAM_VAL_LENGTH]) for key, value in flat_params(config).items()]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        logger.experiment.log_batch(logger.run_id, params=params[start:start + 100])


def finish(cfg: DictConfig, run_dir: Path, record: dict, loggers: list) -> None:
    """The run's metric table (when it got that far), plots/*.png and metrics.json, then its status: FINISHED when the
    record says success, else FAILED. A run that failed before its loggers existed gets an MLflow run here.
    """
    from hydra.utils import instantiate
    from lightning.pytorch.loggers import MLFlowLogger

    from hdmap_train.results import RECORD_NAME
    from hdmap_train.tensorboard_log import metric_scalars

    logger = next((logger for logger in loggers if isinstance(logger, MLFlowLogger)), None)
    if logger is None:
        logger = instantiate(mlflow_entry(cfg))
        prepare(logger, cfg, run_dir)
    client, run_id = logger.experiment, logger.run_id
    if record.get("source_results") and record.get("validation"):
        logger.log_metrics(metric_scalars(record), (record.get("training_info") or {}).get("total_steps", 0))
    for picture in sorted((run_dir / "plots").glob("*.png")):
        client.log_artifact(run_id, str(picture), "plots")
    if (run_dir / RECORD_NAME).is_file():
        client.log_artifact(run_id, str(run_dir / RECORD_NAME))
    client.set_tag(run_id, "status", record["status"])
    client.set_terminated(run_id, "FINISHED" if record["status"] == "success" else "FAILED")


@contextmanager
def tracking(cfg: DictConfig, run_dir: Path, record: dict) -> Iterator[list]:
    """Yield the list the run puts its loggers in; once the block ends, however it ends, `finish` the MLflow run
    (logger=mlflow only), unless its pictures are still drawn (background_pictures: finished once written).
    Enter it before the record's written_however_it_ends, so that metrics.json is written first.
    """
    from hdmap_train.background_pictures import PICTURES_PENDING

    loggers: list = []
    try:
        yield loggers
    finally:
        if record.get("error") != PICTURES_PENDING:
            end_run(cfg, run_dir, record, loggers)


def end_run(cfg: DictConfig, run_dir: Path, record: dict, loggers: list) -> None:
    """`finish` with logger=mlflow (and mlflow installed), an MLflow error logged instead of raised: tracking never
    changes how the run ends.
    """
    if mlflow_entry(cfg) is None or importlib.util.find_spec("mlflow") is None:
        return
    try:
        finish(cfg, run_dir, record, loggers)
    except Exception:
        log.exception("MLflow: could not finish the run of %s", run_dir)


def start_sweep(config: DictConfig) -> None:
    """A tracked sweep's parent run (the one of an earlier launch into the same sweep directory, running again), its id
    written for the jobs (PARENT_FILE). Nothing without logger=mlflow.
    """
    entry = mlflow_entry(config)
    if entry is None:
        return
    require_mlflow(config)
    from mlflow import MlflowClient

    sweep_dir = Path(config.hydra.sweep.dir)
    client = MlflowClient(entry.tracking_uri)
    id_file = sweep_dir / PARENT_FILE
    if id_file.is_file():
        client.update_run(id_file.read_text().strip(), status="RUNNING")
        return
    experiment = client.get_experiment_by_name(entry.experiment_name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(entry.experiment_name)
    tags = {RUN_NAME_TAG: sweep_dir.name, "sweep_dir": str(sweep_dir.absolute()), "overrides": " ".join(config.hydra.overrides.task)}
    id_file.write_text(client.create_run(experiment_id, tags=tags).info.run_id)


def end_sweep(config: DictConfig, table, succeeded: bool) -> None:
    """Close the parent run: the sweep summary files as its artifacts, each child tagged with its condition as the
    summary names it (table: summary.csv's, None when the summary failed), a child left RUNNING by a killed job
    FAILED, the parent FINISHED or FAILED.
    """
    from hdmap_train.sweep.summary import SUMMARY_FILES

    entry = mlflow_entry(config)
    sweep_dir = Path(config.hydra.sweep.dir)
    if entry is None or not (sweep_dir / PARENT_FILE).is_file():
        return
    from mlflow import MlflowClient

    client, run_id = MlflowClient(entry.tracking_uri), (sweep_dir / PARENT_FILE).read_text().strip()
    for name in SUMMARY_FILES:
        if (sweep_dir / name).is_file():
            client.log_artifact(run_id, str(sweep_dir / name))
    jobs = [] if table is None else [str((sweep_dir / job).absolute()) for job in table["job"]]
    conditions = {} if table is None else dict(zip(jobs, table["condition"]))
    statuses = {} if table is None else dict(zip(jobs, table["status"]))
    experiment_id = client.get_run(run_id).info.experiment_id
    for child in client.search_runs([experiment_id], f"tags.`{PARENT_TAG}` = '{run_id}'"):
        job = child.data.tags.get("run_dir")
        if isinstance(condition := conditions.get(job), str):
            client.set_tag(child.info.run_id, "condition", condition)
        if child.info.status == "RUNNING":  # its job's process died before closing it (kill -9, out of memory)
            client.set_tag(child.info.run_id, "status", statuses.get(job, "missing"))
            client.set_terminated(child.info.run_id, "FAILED")
    client.set_terminated(run_id, "FINISHED" if succeeded else "FAILED")
