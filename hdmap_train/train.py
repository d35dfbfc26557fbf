"""`python -m hdmap_train`: train on the source domain, evaluate the best checkpoint on every domain, write metrics.json.

Only light modules are imported at the top: --help, --cfg and every config error answer before torch,
Lightning and anomalib are imported; `run` imports them once a run really starts.
"""

import logging
import os
import signal
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from hdmap_train.background_pictures import jobs_run_here
from hdmap_train.checkpoints import RESUME_NEUTRAL_KEYS, STORAGE_ERRORS, read_stamp, stamp_differences, storage_message
from hdmap_train.checks import check_config
from hdmap_train.devices import JOBLIB_LAUNCHER, job_devices, parallel_jobs
from hdmap_train.domains import record_sources, source_domains, source_list
from hdmap_train.errors import HdmapError
from hdmap_train.mlflow_log import end_run, tracking
from hdmap_train.provenance import provenance
from hdmap_train.results import (
    RECORD_NAME,
    RunRecord,
    metric_value,
    new_record,
    record_results,
    write_score_tables,
    written_however_it_ends,
)
from hdmap_train.run_dir import check_checkpoint, discard_unused, earlier_attempt, interruption_message
from hdmap_train.startup import heavy_imports

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def check_resumed_checkpoint(cfg: DictConfig, run_dir: Path) -> None:
    """cfg.ckpt_path is a complete checkpoint, and not one stamped by another config (which would resume the other
    config's optimizer state under this run's record); HdmapError naming the fix otherwise.
    """
    path = Path(cfg.ckpt_path)
    origin = "resume" if path == run_dir / "checkpoints" / "last.ckpt" else "ckpt_path"
    check_checkpoint(path, origin)
    differs = stamp_differences(read_stamp(path), OmegaConf.to_container(cfg, resolve=True), RESUME_NEUTRAL_KEYS)
    if differs:
        raise HdmapError(f"Checkpoint {path} was written by another config (it differs in {', '.join(differs[:5])}): it "
                         "is not resumed; pass a checkpoint of this config, or ckpt_path=null to train from scratch.")


def run(cfg: DictConfig, run_dir: Path, pictures_in_background: bool = False) -> RunRecord:
    """Train on cfg.domain.source (one domain, or the union of a list), evaluate on each source and each target,
    write run_dir/metrics.json.

    The record is written with status "success" only after every step worked; any exception writes it
    with status "failed" and the error, then propagates. pictures_in_background: a helper process draws the
    pictures and the record is written with "success" once they are done (hdmap_train.background_pictures).
    """
    from hdmap_train.background_pictures import PICTURES_PENDING, start_helper, write_when_drawn

    record = new_record(cfg, run_dir, source_domains(cfg.domain.source))
    engine = pictures = None
    with tracking(cfg, run_dir, record) as loggers, written_however_it_ends(record, run_dir / RECORD_NAME):
        try:
            check_config(cfg)
            if cfg.ckpt_path:
                check_resumed_checkpoint(cfg, run_dir)
            # The heavy imports (torch, Lightning, anomalib) happen here, once the config is known to be sound.
            with heavy_imports():
                import lightning as L

                from hdmap_train.console import data_line
                from hdmap_train.data.datamodule import build_datamodule
                from hdmap_train.efficiency import PeakMemory, run_efficiency
                from hdmap_train.engine import build_engine, predict_all, run_loggers, training_info
                from hdmap_train.models import build_model
                from hdmap_train.weights import weights_record

            from hdmap_train import quiet
            from hdmap_train.threads import apply_threads

            quiet.install()  # Lightning's and anomalib's lines that say nothing about this run
            apply_threads(cfg.get("threads"))
            if pictures_in_background:
                start_helper()  # its imports overlap training
            L.seed_everything(cfg.seed, workers=True)
            memory = PeakMemory()  # peak GPU memory / RSS from here on (metrics.json efficiency)
            datamodule = build_datamodule(cfg.data, cfg.domain, cfg.seed)  # data.root, or data.synthetic generated
            datamodule.setup()
            record["data"] = datamodule.summary()  # incl. the dataset's manifest reference (path, sha256, mapping)
            log.info("%s", data_line(record["data"]))
            model = build_model(cfg.model)
            record["weights"] = weights_record(cfg.model)  # "random", "none" or each pretrained file with its sha256
            loggers.extend(run_loggers(cfg, run_dir))  # logger=mlflow: finished by `tracking` however the run ends
            engine, checkpoint, history = build_engine(cfg, run_dir, loggers)

            engine.fit(model=model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
            record["training_info"] = training_info(cfg, engine, history)
            best = checkpoint.best_model_path
            if not best:
                raise RuntimeError("Training saved no checkpoint (no completed epoch?); nothing to evaluate.")
            record["best_checkpoint"] = best
            info = record["training_info"]
            selected = ("the last epoch: no monitor" if info["best_monitor_value"] is None
                        else f"{cfg.model.monitor} {info['best_monitor_value']:.5g}")
            log.info("Training %s after %d epoch(s), %.1f s; best checkpoint %s (%s)", info["completion_type"],
                     info["last_trained_epoch"], info["fit_seconds"], best, selected)

            start = time.perf_counter()
            reload = not checkpoint.holds_best(engine.trainer)  # else the same tensors: reloading would change nothing
            if not reload:
                log.info("Best checkpoint = the weights in memory (saved after the last training step): not reloaded")
            collector = predict_all(engine, model, datamodule, best if reload else None)
            record["training_info"]["test_seconds"] = round(time.perf_counter() - start, 3)
            record["efficiency"] = run_efficiency(model, engine.trainer, memory)
            record["provenance"] = provenance(record["efficiency"]["device"])
            test_samples = {domain: ds.samples for domain, ds in datamodule.test_data.items()}
            pictures = write_outputs(cfg, run_dir, record, collector, test_samples, engine, pictures_in_background)
            if pictures is None:
                record["status"] = "success"
            else:
                record["error"] = PICTURES_PENDING  # until they are drawn
        except (KeyboardInterrupt, SystemExit) as exc:  # Lightning turns Ctrl-C during fit into SystemExit(1)
            if isinstance(exc, SystemExit) and not (engine is not None and engine.trainer.interrupted):
                raise
            interrupted = interruption_message(run_dir, engine)
            record["error"] = interrupted
            raise HdmapError(interrupted) from None
    if pictures is not None:
        record["status"], record["error"] = "success", None
        write_when_drawn(pictures, record, run_dir / RECORD_NAME, then=lambda: end_run(cfg, run_dir, record, loggers))
    from hdmap_train.console import print_results

    print_results(record)
    return record


def write_outputs(cfg: DictConfig, run_dir: Path, record: RunRecord, collector, test_samples: dict, engine,
                  pictures_in_background: bool = False) -> Future | None:
    """Evaluate the collected scores into the record, then write predictions.csv, validation_scores.csv, TensorBoard
    and the pictures (plots/ and their TensorBoard images); returns the Future of the pictures when a helper
    process draws them (pictures_in_background), else None.
    """
    from hdmap_train.background_pictures import draw
    from hdmap_train.engine import tensorboard_logger
    from hdmap_train.tensorboard_log import log_to_tensorboard, run_hparams, write_pictures
    from hdmap_train.thresholds import choose_threshold

    validation = collector.scores("validation")
    tests = {domain: collector.scores(domain) for domain in test_samples}
    evaluation = cfg.evaluation
    chosen = choose_threshold(validation, evaluation.threshold, evaluation.threshold_quantile, evaluation.threshold_k)
    threshold = chosen["threshold"]
    predictions = record_results(record, chosen, tests, test_samples, evaluation.protocol)

    start = time.perf_counter()
    write_score_tables(run_dir, predictions, validation)
    logger, step = tensorboard_logger(engine.trainer), engine.trainer.global_step
    log_to_tensorboard(logger, record, run_hparams(cfg), step)
    pending = None
    if cfg.evaluation.plots:
        pictures = (run_dir / "plots", Path(logger.log_dir), step, predictions, threshold, record_sources(record),
                    collector.examples, collector.n_examples)
        if pictures_in_background:
            pending = draw(*pictures)
        else:
            write_pictures(*pictures)
    record["training_info"]["report_seconds"] = round(time.perf_counter() - start, 3)  # without background pictures
    return pending


def parallel_worker(hydra_cfg: DictConfig) -> bool:
    """Whether this job runs in a worker process of the joblib launcher beside other jobs (hydra/launcher=gpus)."""
    launcher = hydra_cfg.launcher.get("_target_")
    return (hydra_cfg.mode == RunMode.MULTIRUN and launcher == JOBLIB_LAUNCHER
            and parallel_jobs(int(hydra_cfg.launcher.n_jobs)) > 1)


def run_isolated(cfg: DictConfig, run_dir: Path) -> RunRecord | None:
    """`run` in a forked child process; the record, or None when the run failed (the child logged its line).

    A worker whose process dies (kill -9, out of memory) would end joblib's whole pool, and with it every other
    running job. Here only the child dies: the job is recorded as failed with the signal, and the worker serves
    the sweep's other jobs. The child claims the job folder (its .run.lock names the child's pid).
    """
    from hdmap_train.atomic_files import write_json_atomic
    from hdmap_train.run_dir import claim, end_with_parent, read_record

    with heavy_imports():  # once per worker: each job's child inherits them
        import anomalib.models  # noqa: F401
        import lightning  # noqa: F401
    pid = os.fork()
    if pid == 0:  # the child: run, then leave without running the worker's exit handlers
        code = 1
        try:
            end_with_parent()
            claim(run_dir)
            run(cfg, run_dir)
            code = 0
        except HdmapError as exc:
            log.error("%s", exc)
        except BaseException:
            log.exception("Run failed; details in %s", run_dir / "train.log")
        finally:
            logging.shutdown()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        killed = signal.Signals(os.WTERMSIG(status)).name
        message = (f"The job's process {pid} was killed by {killed} (kill -9, or out of memory): run the sweep again "
                   f"into its directory to redo the job (it resumes from checkpoints/last.ckpt).")
        record = new_record(cfg, run_dir, source_domains(cfg.domain.source))
        record["error"] = message
        write_json_atomic(run_dir / RECORD_NAME, record)
        log.error("%s", message)
        return None
    record = read_record(run_dir)
    return record if os.WEXITSTATUS(status) == 0 and record is not None and record["status"] == "success" else None


def size_text(cfg: DictConfig, choices: dict) -> str:
    """'size=cpu (image 32x96)', or 'image 32x96 (set by experiment=quickstart)' when the experiment sets the image size
    (it wins over size=, which then says nothing about the image).
    """
    image = "x".join(map(str, cfg.data.image_size))
    experiment = choices.get("experiment")
    if experiment and (CONF_DIR / "experiment" / f"{experiment}.yaml").is_file():
        values = OmegaConf.load(CONF_DIR / "experiment" / f"{experiment}.yaml")
        if any(OmegaConf.select(values, key) is not None for key in ("model.image_size", "data.image_size")):
            return f"image {image} (set by experiment={experiment})"
    return f"size={choices.get('size')} (image {image})"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Entry point of `python -m hdmap_train`; in a sweep, returns cfg.optimized_metric (for sweepers).

    A run directory that already holds a successful run of the same config is not trained again (so a
    sweep re-run into its sweep dir skips finished jobs); one holding checkpoints/last.ckpt resumes from it.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(cfg.paths.output_dir)  # this run's directory (hydra.run.dir, or the sweep job's folder)
    choices = hydra_cfg.runtime.choices
    log.info(
        "Config %s: model=%s %s domain=%s -> %s data=%s (root %s) experiment=%s name=%s | overrides: %s",
        run_dir / (hydra_cfg.output_subdir or ".hydra") / "config.yaml", cfg.model.name, size_text(cfg, choices),
        "+".join(source_list(cfg.domain.source)), ",".join(map(str, cfg.domain.targets)),
        choices.get("data"), f"generated into {cfg.data.cache_dir}" if cfg.data.synthetic else cfg.data.root,
        choices.get("experiment"), cfg.name, " ".join(hydra_cfg.overrides.task) or "none",
    )
    if hydra_cfg.mode == RunMode.RUN:
        try:
            check_config(cfg)  # before anything is written: a config error leaves no run folder behind
        except HdmapError as exc:
            log.error("%s", exc)
            discard_unused(run_dir)
            sys.exit(1)
    try:
        record, resume_from = earlier_attempt(cfg, run_dir)
        if record is not None:
            log.info("Already done, not trained again: %s", run_dir / RECORD_NAME)
        else:
            if resume_from and cfg.ckpt_path is None:
                log.info("Resuming training from %s", resume_from)
                with open_dict(cfg):
                    cfg.ckpt_path = resume_from
            with job_devices(hydra_cfg, cfg.gpus_per_job, cfg.jobs_per_gpu):
                if parallel_worker(hydra_cfg):
                    record = run_isolated(cfg, run_dir)
                    if record is None:
                        return None  # failed: the child logged its line and wrote the record
                else:
                    record = run(cfg, run_dir, pictures_in_background=cfg.evaluation.plots and jobs_run_here(hydra_cfg))
        return metric_value(record, cfg.optimized_metric) if hydra_cfg.mode == RunMode.MULTIRUN else None
    except HdmapError as exc:
        log.error("%s", exc)
    except OSError as exc:
        if exc.errno not in STORAGE_ERRORS:
            raise
        log.error("%s", storage_message(exc))
    except Exception:
        log.exception("Run failed; details in %s", run_dir / "train.log")
    if hydra_cfg.mode == RunMode.RUN:
        sys.exit(1)
    return None  # in a sweep, the failed job is recorded in its metrics.json and the sweep goes on
