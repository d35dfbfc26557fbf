"""`python -m hdmap_train`: train on the source domain, evaluate the best checkpoint on every domain, write metrics.json.

Only light modules are imported at the top: --help, --cfg and every config error answer before torch,
Lightning and anomalib are imported; `run` imports them once a run really starts.
"""

import logging
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from hdmap_train.background_pictures import jobs_run_here
from hdmap_train.devices import job_devices
from hdmap_train.domains import (
    HDMAP_DOMAINS,
    SEVERAL_SOURCES_NORMALIZATION,
    domain_folder,
    domain_problems,
    record_sources,
    shared_normalization,
    source_domains,
    source_list,
)
from hdmap_train.errors import HdmapError
from hdmap_train.run_dir import RunRecord, check_checkpoint, earlier_attempt, new_record, written_however_it_ends
from hdmap_train.startup import heavy_imports

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
VALIDATION_SCORES = "validation_scores.csv"  # the run's validation scores (hdmap_train.evaluate re-thresholds them)


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
    if cfg.data.synthetic is None and cfg.data.root and not Path(cfg.data.root).expanduser().is_dir():
        problems.append(f"Dataset root {cfg.data.root} does not exist: set data.root=<dir> (or HDMAP_ROOT), or use data=synthetic")
    problems += domain_problems(cfg.domain.source, list(cfg.domain.targets), dataset_domains(cfg.data))
    normalization = cfg.data.normalization
    if len(source_domains(cfg.domain.source)) > 1 and not shared_normalization(normalization.mode, normalization.stats):
        problems.append(SEVERAL_SOURCES_NORMALIZATION)
    if problems:
        raise HdmapError("Invalid configuration: " + "; ".join(problems) + ".")


def dataset_domains(data: DictConfig) -> list[str] | None:
    """The domain folders of the dataset (data.synthetic's domains, or data.root's domain_* folders); None when the
    root is not there (check_config names that itself).
    """
    if data.synthetic is not None:
        return [domain_folder(str(name)) for name in data.synthetic.get("domains", HDMAP_DOMAINS)]
    root = Path(data.root).expanduser() if data.root else None
    if root is None or not root.is_dir():
        return None
    return sorted(path.name for path in root.iterdir() if path.is_dir() and path.name.startswith("domain_"))


def run(cfg: DictConfig, run_dir: Path, pictures_in_background: bool = False) -> RunRecord:
    """Train on cfg.domain.source (one domain, or the union of a list), evaluate on each source and each target,
    write run_dir/metrics.json.

    The record is written with status "success" only after every step worked; any exception writes it
    with status "failed" and the error, then propagates. pictures_in_background: a helper process draws the
    pictures and the record is written with "success" once they are done (hdmap_train.background_pictures).
    """
    from hdmap_train.background_pictures import PICTURES_PENDING, start_helper, write_when_drawn
    from hdmap_train.outputs import package_versions  # light: package metadata

    record = new_record(cfg, run_dir, source_domains(cfg.domain.source), package_versions())
    engine = pictures = None
    with written_however_it_ends(record, run_dir / "metrics.json"):
        try:
            check_config(cfg)
            if cfg.ckpt_path:
                last = run_dir / "checkpoints" / "last.ckpt"
                check_checkpoint(Path(cfg.ckpt_path), "resume" if Path(cfg.ckpt_path) == last else "ckpt_path")
            # The heavy imports (torch, Lightning, anomalib) happen here, once the config is known to be sound.
            with heavy_imports():
                import lightning as L

                from hdmap_train.data.datamodule import build_datamodule
                from hdmap_train.efficiency import PeakMemory, run_efficiency
                from hdmap_train.engine import build_engine, predict_all, training_info
                from hdmap_train.models import build_model
                from hdmap_train.outputs import data_line

            if pictures_in_background:
                start_helper()  # its imports overlap training
            L.seed_everything(cfg.seed, workers=True)
            memory = PeakMemory()  # peak GPU memory / RSS from here on (metrics.json efficiency)
            datamodule = build_datamodule(cfg.data, cfg.domain, cfg.seed)  # data.root, or data.synthetic generated
            datamodule.setup()
            record["data"] = datamodule.summary()  # incl. the dataset's manifest reference (path, sha256, mapping)
            log.info("%s", data_line(record["data"]))
            model = build_model(cfg.model)
            engine, checkpoint, history = build_engine(cfg, run_dir)

            engine.fit(model=model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
            record["training_info"] = training_info(cfg, engine, history)
            best = checkpoint.best_model_path
            if not best:
                raise RuntimeError("Training saved no checkpoint (no completed epoch?); nothing to evaluate.")
            record["best_checkpoint"] = best
            info = record["training_info"]
            log.info("Training %s after %d epoch(s), %.1f s; best checkpoint %s (%s %s)", info["completion_type"],
                     info["last_trained_epoch"], info["fit_seconds"], best, cfg.model.monitor or "no monitor",
                     "n/a" if info["best_monitor_value"] is None else f"{info['best_monitor_value']:.5g}")

            start = time.perf_counter()
            reload = not checkpoint.holds_best(engine.trainer)  # else the same tensors: reloading would change nothing
            if not reload:
                log.info("Best checkpoint = the weights in memory (saved after the last training step): not reloaded")
            collector = predict_all(engine, model, datamodule, best if reload else None)
            record["training_info"]["test_seconds"] = round(time.perf_counter() - start, 3)
            record["efficiency"] = run_efficiency(model, engine.trainer, memory)
            test_samples = {domain: ds.samples for domain, ds in datamodule.test_data.items()}
            pictures = report(cfg, run_dir, record, collector, test_samples, engine, pictures_in_background)
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
        write_when_drawn(pictures, record, run_dir / "metrics.json")
    from hdmap_train.outputs import print_results

    print_results(record)
    return record


def record_results(record: RunRecord, threshold: float, quantile: float, tests: dict, test_samples: dict):
    """The threshold (the `quantile` of validation scores it came from), source/target results and domain-shift
    numbers into the record; returns the predictions table (predictions.csv). test_samples: {domain: samples},
    sources first.

    Several source domains: source_results pools their test sets, source_domain_results holds each of them.
    """
    from hdmap_train.evaluation import domain_metrics, evaluate_domains, record_transfer_metrics

    predictions, results = evaluate_domains(threshold, tests, test_samples)
    sources = record_sources(record)
    record["validation"] = {"threshold_quantile": quantile, "threshold": threshold}
    if len(sources) == 1:
        record["source_results"] = results.pop(sources[0])
    else:
        pooled = predictions[predictions["domain"].isin(sources)]
        record["source_results"] = domain_metrics(record["source_domain"], pooled, threshold)
        record["source_domain_results"] = {domain: results.pop(domain) for domain in sources}
    record["target_results"] = results
    # avg_target_auroc, hmean_target_auroc, hmean_auroc, transfer_ratio (+ note: null at or below chance, no targets)
    record.update(record_transfer_metrics(record))
    return predictions


def validation_table(validation):
    """validation_scores.csv: image_path, label, anomaly_score of every validation image (new thresholds, no model)."""
    import pandas as pd

    return pd.DataFrame({"image_path": validation.paths, "label": validation.labels, "anomaly_score": validation.scores})


def report(cfg: DictConfig, run_dir: Path, record: RunRecord, collector, test_samples: dict, engine,
           pictures_in_background: bool = False) -> Future | None:
    """Evaluate the collected scores into the record, then write predictions.csv, validation_scores.csv, TensorBoard
    and the pictures (plots/ and their TensorBoard images); returns the Future of the pictures when a helper
    process draws them (pictures_in_background), else None.
    """
    from hdmap_train.background_pictures import draw
    from hdmap_train.evaluation import validation_threshold
    from hdmap_train.outputs import log_to_tensorboard, run_hparams, write_csv_atomic, write_pictures

    validation = collector.scores("validation")
    tests = {domain: collector.scores(domain) for domain in test_samples}
    quantile = cfg.evaluation.threshold_quantile
    threshold = validation_threshold(validation, quantile)
    predictions = record_results(record, threshold, quantile, tests, test_samples)

    start = time.perf_counter()
    write_csv_atomic(run_dir / "predictions.csv", predictions)
    write_csv_atomic(run_dir / VALIDATION_SCORES, validation_table(validation))
    logger, step = engine.trainer.logger, engine.trainer.global_step
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


def interruption_message(run_dir: Path, engine) -> str:
    """What an interrupted run says: when it stopped and how to resume it."""
    if engine is None or not (run_dir / "checkpoints" / "last.ckpt").is_file():
        return "Interrupted (Ctrl-C) before a training epoch was saved; run the command again to start over."
    return (
        f"Interrupted (Ctrl-C) during training after epoch {engine.trainer.current_epoch}. To resume, run the same "
        f"command with hydra.run.dir={run_dir} (it continues from checkpoints/last.ckpt)."
    )


def metric_value(record: RunRecord, key: str) -> float | None:
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
    run_dir = Path(cfg.paths.output_dir)  # this run's directory (hydra.run.dir, or the sweep job's folder)
    choices = hydra_cfg.runtime.choices
    log.info(
        "Config %s: model=%s size=%s (image %s) domain=%s -> %s data=%s (root %s) experiment=%s name=%s | overrides: %s",
        run_dir / (hydra_cfg.output_subdir or ".hydra") / "config.yaml", cfg.model.name, choices.get("size"),
        "x".join(map(str, cfg.data.image_size)), "+".join(source_list(cfg.domain.source)), ",".join(map(str, cfg.domain.targets)),
        choices.get("data"), f"generated into {cfg.data.cache_dir}" if cfg.data.synthetic else cfg.data.root,
        choices.get("experiment"), cfg.name, " ".join(hydra_cfg.overrides.task) or "none",
    )
    try:
        record, resume_from = earlier_attempt(cfg, run_dir)
        if record is not None:
            log.info("Already done, not trained again: %s", run_dir / "metrics.json")
        else:
            if resume_from and cfg.ckpt_path is None:
                log.info("Resuming training from %s", resume_from)
                with open_dict(cfg):
                    cfg.ckpt_path = resume_from
            with job_devices(hydra_cfg, cfg.gpus_per_job, cfg.jobs_per_gpu):
                record = run(cfg, run_dir, pictures_in_background=cfg.evaluation.plots and jobs_run_here(hydra_cfg))
        return metric_value(record, cfg.optimized_metric) if hydra_cfg.mode == RunMode.MULTIRUN else None
    except HdmapError as exc:
        log.error("%s", exc)
    except Exception:
        log.exception("Run failed; details in %s", run_dir / "train.log")
    if hydra_cfg.mode == RunMode.RUN:
        sys.exit(1)
    return None  # in a sweep, the failed job is recorded in its metrics.json and the sweep goes on
