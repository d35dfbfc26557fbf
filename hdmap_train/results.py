"""One home for a run's result: the metrics.json record (its schema, creating, recording, reading, writing) and
the one declared table of its metrics.

A metric is one `Metric` entry: its key, its headers, its format, which way is better, and where it is shown
(`CONSOLE` the end-of-run table, `TENSORBOARD` scalars, `LONG` results_long.csv and the sweep statistics,
`SUMMARY` summary.md, `JOBS` summary.csv's per-domain columns, `PAPER` the paper table). The console table,
TensorBoard, the long table, summary.md, summary.csv and the paper table all iterate these tables, so a new
metric is one entry here (and its computation in hdmap_train.metrics). A test fails when a metric that
hdmap_train.metrics computes has no entry.

Light: nothing here imports torch, Lightning or anomalib.
"""

import json
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import TypedDict

from omegaconf import DictConfig, OmegaConf

from hdmap_train.atomic_files import write_json_atomic
from hdmap_train.checkpoints import STORAGE_ERRORS, config_hash, storage_message
from hdmap_train.domains import record_sources, source_label
from hdmap_train.errors import HdmapError

RECORD_NAME = "metrics.json"
VALIDATION_SCORES = "validation_scores.csv"  # the run's validation scores (hdmap_train.evaluate re-thresholds them)
PACKAGES = ("hdmap_train", "anomalib", "torch", "torchvision", "lightning", "hydra-core", "timm", "numpy")

# Where a metric is shown.
CONSOLE, TENSORBOARD, LONG, SUMMARY, JOBS, PAPER = "console", "tensorboard", "long", "summary", "jobs", "paper"


@dataclass(frozen=True)
class Metric:
    """One number of a result: key (in metrics.json), headers, format, direction, where it is shown.

    header: the console table's short column; title: summary.md's column; digits and scale: how summary.md
    formats it; higher_is_better: None for a number without a better direction (a threshold); paper: (position,
    header, LaTeX header, digits, scale) of its column in each domain of the paper table; bounds: the values it
    can take (None: unbounded), which its confidence intervals are clipped to.
    """

    key: str
    header: str
    title: str
    shown: frozenset[str]
    digits: int = 3
    scale: float = 1.0
    higher_is_better: bool | None = True
    paper: tuple[int, str, str, int, float] | None = None
    bounds: tuple[float | None, float | None] = (0.0, 1.0)


def _metric(key: str, header: str, title: str, *shown: str, **format_) -> Metric:
    return Metric(key, header, title, frozenset(shown), **format_)


EVERYWHERE = (CONSOLE, TENSORBOARD, LONG)
POSITIVE = (0.0, None)  # the bounds of a number with no upper limit
# Metrics of one evaluated domain (and of each subgroup): hdmap_train.metrics.image_metrics.
DOMAIN_METRICS = (
    _metric("image_AUROC", "AUROC", "AUROC", *EVERYWHERE, SUMMARY, JOBS, paper=(1, "AUROC", "AUROC", 3, 1.0)),
    _metric("image_AUPR", "AUPR", "AUPR", *EVERYWHERE, SUMMARY),
    _metric("image_pAUC_FPR_10pct", "pAUC", "pAUC FPR≤0.1", TENSORBOARD, LONG, SUMMARY),  # console: 80 columns
    _metric("image_F1Score", "F1", "F1", *EVERYWHERE, SUMMARY, JOBS),
    _metric("image_precision", "prec", "precision", *EVERYWHERE),
    _metric("image_recall", "rec", "recall", *EVERYWHERE),
    _metric("image_accuracy", "acc", "acc", *EVERYWHERE, SUMMARY, paper=(0, "acc %", r"Acc.\,(\%)", 1, 100.0)),
    _metric("image_FPR", "FPR", "FPR", *EVERYWHERE, higher_is_better=False),
    _metric("oracle_F1Score", "oF1", "oracle F1", *EVERYWHERE),
    _metric("TPR_at_FPR_1pct", "TPR@1", "TPR@FPR1%", *EVERYWHERE, SUMMARY),
    _metric("TPR_at_FPR_5pct", "TPR@5", "TPR@FPR5%", *EVERYWHERE, SUMMARY),
    _metric("threshold_gap", "gap", "threshold gap (oracle F1 − F1)", TENSORBOARD, LONG, SUMMARY, higher_is_better=False),
    _metric("oracle_threshold", "othr", "oracle threshold", TENSORBOARD, higher_is_better=None, bounds=(None, None)),
)
# What image_metrics records beside the metrics: the threshold applied and the image counts.
DOMAIN_FIELDS = ("threshold", "n_samples", "n_normal", "n_fault")
# A run's domain-shift numbers (hdmap_train.metrics.transfer_metrics): top-level keys of metrics.json.
SHIFT_METRICS = (
    _metric("avg_target_auroc", "avg target AUROC", "avg target AUROC", TENSORBOARD, SUMMARY, JOBS),
    _metric("hmean_target_auroc", "hmean target AUROC", "hmean target AUROC", TENSORBOARD, SUMMARY, JOBS),
    _metric("hmean_auroc", "hmean AUROC", "hmean AUROC (all domains)", TENSORBOARD, SUMMARY, JOBS),
    _metric("transfer_ratio", "transfer ratio", "transfer ratio", TENSORBOARD, SUMMARY, JOBS, bounds=POSITIVE),
    _metric("official_score", "official score", "DCASE official score", TENSORBOARD, SUMMARY, JOBS),  # protocol=dcase only
)
# What a job cost (summary.csv columns from metrics.json `efficiency`, hdmap_train.efficiency).
COST_METRICS = (
    _metric("parameters_total", "parameters", "parameters (M)", SUMMARY, JOBS, digits=2, scale=1e-6, higher_is_better=False,
            bounds=POSITIVE),
    _metric("inference_images_per_second", "images/s", "inference images/s", SUMMARY, JOBS, digits=1, bounds=POSITIVE),
    _metric("peak_memory_mb", "peak MiB", "peak memory MiB", SUMMARY, JOBS, digits=0, higher_is_better=False,
            bounds=POSITIVE),
    _metric("memory_bank_mb", "bank MiB", "memory bank MiB", SUMMARY, JOBS, digits=1, higher_is_better=False,
            bounds=POSITIVE),
)
METRICS = {metric.key: metric for metric in (*DOMAIN_METRICS, *SHIFT_METRICS, *COST_METRICS)}


def shown(where: str, table: tuple[Metric, ...] = DOMAIN_METRICS) -> list[Metric]:
    """The metrics of `table` shown in `where` (CONSOLE, TENSORBOARD, ...), in table order."""
    return [metric for metric in table if where in metric.shown]


def keys(where: str, table: tuple[Metric, ...] = DOMAIN_METRICS) -> list[str]:
    """The keys of shown(where, table)."""
    return [metric.key for metric in shown(where, table)]


class DomainResult(TypedDict, total=False):
    """Metrics of one evaluated domain (hdmap_train.metrics.image_metrics, plus `domain` and `subgroups`).

    Its keys are `domain`, DOMAIN_METRICS, DOMAIN_FIELDS and `subgroups` (a test holds them equal).
    """

    domain: str
    image_AUROC: float | None
    image_AUPR: float | None
    image_pAUC_FPR_10pct: float | None
    image_F1Score: float
    image_precision: float
    image_recall: float
    image_accuracy: float
    image_FPR: float
    threshold: float
    oracle_F1Score: float | None
    oracle_threshold: float | None
    threshold_gap: float | None  # oracle_F1Score - image_F1Score: the F1 the validation threshold leaves unreached
    TPR_at_FPR_1pct: float | None
    TPR_at_FPR_5pct: float | None
    n_samples: int
    n_normal: int
    n_fault: int
    subgroups: dict[str, dict]


class RunRecord(TypedDict, total=False):
    """metrics.json: written with status "failed" first and "success" only once every step worked."""

    status: str  # success | failed
    error: str | None
    condition: dict  # name, model, config (the full resolved config), config_hash
    source_domain: str  # domain_X, or domain_A+domain_B for several source domains
    source_domains: list[str]  # several source domains only: [domain_A, domain_B]
    experiment_path: str  # the run directory
    timestamp: str
    versions: dict[str, str]
    data: dict  # hdmap_train.data.summary: root, manifest, split sizes, test_fingerprints, normalisation, ...
    weights: dict  # hdmap_train.weights.weights_record: mode (pretrained | random | none) and the files
    training_info: dict  # epochs, losses per epoch, images per epoch, fit/test/report seconds, attempts
    best_checkpoint: str
    evaluated_from: str  # an evaluation's record only: the run it evaluated
    evaluation: dict  # an evaluation's record only: from_predictions, overrides, notes
    validation: dict  # threshold_quantile, threshold
    source_results: DomainResult  # several sources: their test sets pooled (domain = the source_domain label)
    source_domain_results: dict[str, DomainResult]  # several sources only: each source domain's test set
    target_results: dict[str, DomainResult]
    avg_target_auroc: float | None
    hmean_target_auroc: float | None  # harmonic mean of the target AUROCs
    hmean_auroc: float | None  # harmonic mean over source and targets
    transfer_ratio: float | None
    transfer_ratio_note: str | None  # why transfer_ratio is null (source AUROC at or below chance, no targets)
    dcase: dict | None  # evaluation.protocol=dcase only: hdmap_train.dcase.dcase_metrics
    official_score: float | None  # evaluation.protocol=dcase only: DCASE's hmean of AUC(domain)s and pooled pAUC
    efficiency: dict  # hdmap_train.efficiency.run_efficiency: parameters, inference images/s, peak memory, memory bank
    provenance: dict  # hdmap_train.provenance: commit, dirty, cpu, and on a GPU gpu, gpu_driver, cuda


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that decide a result."""
    return {"python": platform.python_version(), **{name: version(name) for name in PACKAGES}}


def new_record(cfg: DictConfig, run_dir: Path, sources: list[str]) -> RunRecord:
    """The record of a run that has not succeeded yet; sources: the source domain folders (source_domains)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    return RunRecord(
        condition={"name": cfg.name, "model": cfg.model.name, "config": config, "config_hash": config_hash(config)},
        status="failed",
        error=None,
        source_domain=source_label(sources),
        **({"source_domains": list(sources)} if len(sources) > 1 else {}),
        experiment_path=str(run_dir),
        timestamp=datetime.now().isoformat(timespec="seconds"),
        versions=package_versions(),
    )


@contextmanager
def written_however_it_ends(record: RunRecord, path: Path) -> Iterator[RunRecord]:
    """The block fills the record; however it ends, the record is written to `path` atomically, an exception's
    type and message as its `error` unless the block set one (it then says "success" only if the block did).
    """
    try:
        yield record
    except BaseException as exc:
        record["error"] = record.get("error") or f"{type(exc).__name__}: {exc}"
        raise
    finally:
        try:
            write_json_atomic(path, record)
        except OSError as exc:  # a full or read-only disk: one line (the record says nothing, never success)
            if exc.errno not in STORAGE_ERRORS:
                raise
            raise HdmapError(storage_message(exc, path)) from None


def load_record(path: Path) -> RunRecord:
    """The record in `path`; OSError when it cannot be read, ValueError when it is no hdmap_train record."""
    record = json.loads(path.read_text())
    if not isinstance(record, dict) or not {"status", "condition"} <= record.keys():
        raise ValueError("not a hdmap_train record")
    return record


def record_results(record: RunRecord, validation: dict, tests: dict, test_samples: dict, protocol: str = "standard"):
    """The threshold (validation: thresholds.choose_threshold's block, recorded as it is), source/target results
    and domain-shift numbers (protocol=dcase: and DCASE's scores, `dcase` and `official_score`) into the record;
    returns the predictions table (predictions.csv). test_samples: {domain: samples}, sources first.

    Several source domains: source_results pools their test sets, source_domain_results holds each of them.
    """
    from hdmap_train.metrics import domain_metrics, evaluate_domains, record_transfer_metrics

    threshold = validation["threshold"]
    predictions, results = evaluate_domains(threshold, tests, test_samples)
    sources = record_sources(record)
    record["validation"] = dict(validation)
    if len(sources) == 1:
        record["source_results"] = results.pop(sources[0])
    else:
        pooled = predictions[predictions["domain"].isin(sources)]
        record["source_results"] = domain_metrics(record["source_domain"], pooled, threshold)
        record["source_domain_results"] = {domain: results.pop(domain) for domain in sources}
    record["target_results"] = results
    # avg_target_auroc, hmean_target_auroc, hmean_auroc, transfer_ratio (+ note: null at or below chance, no targets)
    record.update(record_transfer_metrics(record))
    if protocol == "dcase":
        from hdmap_train.dcase import dcase_metrics

        record["dcase"] = dcase_metrics(predictions, threshold)
        record["official_score"] = (record["dcase"] or {}).get("official_score")
    return predictions


def write_score_tables(directory: Path, predictions, validation=None) -> None:
    """predictions.csv and, given the validation Scores, validation_scores.csv (image_path, label, anomaly_score of
    every validation image: new thresholds without the model), written atomically.
    """
    import pandas as pd

    from hdmap_train.atomic_files import write_csv_atomic

    write_csv_atomic(directory / "predictions.csv", predictions)
    if validation is not None:
        table = pd.DataFrame({"image_path": validation.paths, "label": validation.labels, "anomaly_score": validation.scores})
        write_csv_atomic(directory / VALIDATION_SCORES, table)


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
