"""`python -m hdmap_train.evaluate run=<run dir> [out=<dir>] [from_predictions=true] [key=value ...]`: evaluate a
finished run again (other data, other domains, another threshold quantile, other subgroups) into a new directory.

The config is the run's own (metrics.json condition.config, as resolved when it ran) with Hydra-style
overrides on top. The best checkpoint (record best_checkpoint) predicts the test sets; the threshold is the
run's validation threshold, or with evaluation.threshold_quantile=q the q quantile of the run's validation
scores (validation_scores.csv). The new directory (default <run>/evaluations/<time>/) gets a metrics.json of
the run's schema with `evaluated_from` (the run) and `best_checkpoint`, predictions.csv, validation_scores.csv
and plots/; nothing of the run is changed.

from_predictions=true needs no model: from the run's predictions.csv it recomputes every metric for a new
evaluation.threshold_quantile (from validation_scores.csv), new data.subgroups rules and fewer domain.targets.

Only light modules are imported until the arguments are checked; torch and anomalib only to predict.
"""

import logging
import sys
import time
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hdmap_train.arguments import Command, Key, run_command
from hdmap_train.checks import check_config, threshold_problems
from hdmap_train.domains import record_sources
from hdmap_train.errors import HdmapError
from hdmap_train.job_names import ADDED_DEFAULTS, covered
from hdmap_train.log_file import LOG_FORMAT, log_to_file
from hdmap_train.provenance import provenance
from hdmap_train.results import (
    RECORD_NAME,
    VALIDATION_SCORES,
    RunRecord,
    new_record,
    record_results,
    write_score_tables,
    written_however_it_ends,
)
from hdmap_train.run_dir import best_checkpoint, finished_record
from hdmap_train.startup import heavy_imports

log = logging.getLogger(__name__)
COMMAND = Command(
    "evaluate", "Evaluate a finished run again into a new directory: other data, other domains, another threshold "
    "quantile, other subgroups; from_predictions=true recomputes metrics from predictions.csv without the model.",
    (Key("run", "the run directory (holding metrics.json)", required=True, path=True),
     Key("out", "the new directory (default <run>/evaluations/<time>/)", path=True),
     Key("from_predictions", "true: no model, recompute from predictions.csv (default false)", default=False, kind=bool)),
    ("run=outputs/2026-11-22/10-00-00_draem_A data.root=/data/HDMAP/1000_tiff_minmax domain.targets=[B,C]",
     "run=outputs/2026-11-22/10-00-00_draem_A from_predictions=true evaluation.threshold_quantile=0.95"),
    overrides="overrides of the run's own config (+key=value adds a key)", bare="run",
)
# What from_predictions=true can recompute without the model.
PREDICTION_KEYS = ("evaluation.threshold_quantile", "evaluation.threshold", "evaluation.threshold_k", "evaluation.protocol",
                   "evaluation.plots", "domain.targets", "data.subgroups")
THRESHOLD_KEYS = ("evaluation.threshold_quantile", "evaluation.threshold", "evaluation.threshold_k")

# Data keys that leave the validation split as it was (the run's validation scores stay valid).
TEST_ONLY_KEYS = ("data.subgroups", "data.eval_batch_size", "data.num_workers", "data.cache_limit_mb",
                  "data.multiprocessing_context", "data.pin_memory", "data.device_cache")
_ABSENT = object()


def apply_overrides(config: dict, overrides: list) -> DictConfig:
    """The run's resolved config (its hydra node left out) with the overrides on top.

    key=value must name an existing key, +key=value a new one; data.root on a run of data=synthetic also clears
    data.synthetic (which would otherwise win). Runs recorded before the threshold rules existed used the quantile
    rule: their config gets job_names.ADDED_DEFAULTS as it was.
    """
    cfg = OmegaConf.create({key: value for key, value in config.items() if key != "hydra"})
    for key, value in ADDED_DEFAULTS.items():
        if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            OmegaConf.update(cfg, key, value, force_add=True)
    for override in overrides:
        key, exists = override.key_or_group, OmegaConf.select(cfg, override.key_or_group, default=_ABSENT) is not _ABSENT
        if override.is_add() and exists and not override.is_force_add():
            raise HdmapError(f"+{key}: the run's config already has {key}; drop the '+' to change it.")
        if not override.is_add() and not exists:
            raise HdmapError(f"{key} is not a key of the run's config: check the spelling, or add it with +{key}=...")
        OmegaConf.update(cfg, key, override.value(), merge=False, force_add=True)
    keys = [override.key_or_group for override in overrides]
    if "data.root" in keys and "data.synthetic" not in keys and cfg.data.get("synthetic") is not None:
        cfg.data.synthetic = None
    return cfg


def new_directory(run_dir: Path, out: str | None) -> Path:
    """The new directory: out= (which must not exist, or be empty), or <run>/evaluations/<time>[_n]; created."""
    try:
        if out is not None:
            path = Path(out)
            if path.exists() and (not path.is_dir() or any(path.iterdir())):
                raise HdmapError(f"out={path} exists and is not empty: evaluate writes into a new directory, choose another out=.")
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".writable"
            probe.touch()  # a read-only mount may still let mkdir's exist_ok pass
            probe.unlink()
            return path
        stamp = run_dir / "evaluations" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        for n in range(1, 1000):
            path = stamp if n == 1 else stamp.with_name(f"{stamp.name}_{n}")
            try:
                path.mkdir(parents=True)
                return path
            except FileExistsError:
                continue
    except OSError as exc:
        where = f"out={out}" if out is not None else f"a directory under {run_dir / 'evaluations'}"
        raise HdmapError(f"Cannot write {where} ({exc.strerror}): pass a writable out=<dir>.") from None
    raise HdmapError(f"Cannot create a new directory under {run_dir / 'evaluations'}; pass out=<dir>.")


def stored_validation(run_dir: Path):
    """The run's validation Scores from validation_scores.csv (float32, as predicted), or None without the file."""
    import numpy as np
    import pandas as pd

    from hdmap_train.metrics import Scores

    path = run_dir / VALIDATION_SCORES
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype={"image_path": str, "label": int, "anomaly_score": np.float32})
    return Scores(frame["anomaly_score"].to_numpy(), frame["label"].to_numpy(), frame["image_path"].tolist())


def predict_again(cfg: DictConfig, checkpoint: Path, out_dir: Path, record: RunRecord) -> tuple:
    """Predict validation and test sets of cfg's data with the checkpoint: (collector, {domain: test samples})."""
    with heavy_imports():
        import lightning as L

        from hdmap_train.checkpoints import load_model
        from hdmap_train.console import data_line
        from hdmap_train.data.datamodule import build_datamodule
        from hdmap_train.engine import build_engine, predict_all

    from hdmap_train import quiet

    quiet.install()
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.data, cfg.domain, cfg.seed)
    datamodule.setup()
    record["data"] = datamodule.summary()
    log.info("%s", data_line(record["data"]))
    engine, _, _ = build_engine(cfg, out_dir)
    model = load_model(OmegaConf.to_container(cfg.model, resolve=True), checkpoint)  # one line if it does not load
    collector = predict_all(engine, model, datamodule, str(checkpoint))
    record["provenance"] = provenance(str(engine.trainer.strategy.root_device))
    return collector, {domain: dataset.samples for domain, dataset in datamodule.test_data.items()}


def regrouped(frame, rules: list) -> list[str]:
    """Each predictions.csv row's subgroup under new data.subgroups rules, as the folder scan assigns them ('' for none)."""
    from hdmap_train.checks import check_subgroups
    from hdmap_train.data.layout import subgroup_names

    rules = check_subgroups(rules)
    names = {}
    if rules:
        for _, rows in frame.groupby(["domain", "label"]):
            paths = sorted(rows["image_path"])
            names |= dict(zip(paths, subgroup_names([Path(p) for p in paths], rules), strict=True))
    return [names.get(path, "") for path in frame["image_path"]]


def predictions_again(run_dir: Path, cfg: DictConfig, sources: list[str], regroup: bool) -> tuple[dict, dict]:
    """The run's predictions.csv as evaluate_domains' inputs ({domain: Scores}, {domain: samples}) for the sources +
    cfg.domain.targets, with subgroups recomputed from cfg.data.subgroups when `regroup`.
    """
    import numpy as np
    import pandas as pd

    from hdmap_train.data.layout import domain_folder
    from hdmap_train.metrics import Scores

    frame = pd.read_csv(run_dir / "predictions.csv", keep_default_na=False, dtype={"anomaly_score": np.float32, "subgroup": str})
    if regroup:
        frame["subgroup"] = regrouped(frame, OmegaConf.to_container(cfg.data.subgroups) or [])
    domains = list(dict.fromkeys([*sources, *(domain_folder(str(t)) for t in cfg.domain.targets)]))
    missing = [d for d in domains if d not in set(frame["domain"])]
    if missing:
        raise HdmapError(f"{run_dir / 'predictions.csv'} holds no {', '.join(missing)}: drop from_predictions=true to "
                         "evaluate those domains with the checkpoint.")
    parts = {domain: frame[frame["domain"] == domain] for domain in domains}
    tests = {d: Scores(rows["anomaly_score"].to_numpy(), rows["label"].to_numpy(), rows["image_path"].tolist())
             for d, rows in parts.items()}
    return tests, {d: rows[["image_path", "split", "subgroup"]] for d, rows in parts.items()}


def normalisation_note(data: dict, run_data: dict) -> str | None:
    """Why the scores may differ from the run's: a domain normalised otherwise than in the run (its statistics come
    from the evaluated data's training images); None when every domain of both is normalised alike.
    """
    applied, before = (((d.get("normalization") or {}).get("applied") or {}) for d in (data, run_data))
    differing = sorted(d for d in applied.keys() & before.keys() if applied[d] != before[d])
    if not differing:
        return None
    return f"{', '.join(differing)} normalised otherwise than in the run (data.normalization.applied in both metrics.json)"


def check_request(run_dir: Path, run_record: RunRecord, cfg: DictConfig, keys: list[str], from_predictions: bool) -> tuple:
    """Everything that can be refused before a directory is made: (best checkpoint, the run's stored validation
    Scores or None, whether the validation split is predicted again).
    """
    validation = stored_validation(run_dir)
    if from_predictions:
        needs_model = [key for key in keys if not covered(key, PREDICTION_KEYS)]
        if needs_model:
            raise HdmapError(f"from_predictions=true recomputes {', '.join(PREDICTION_KEYS)} only; {', '.join(needs_model)} needs "
                             "the model: drop from_predictions.")
        if problems := threshold_problems(cfg.evaluation):
            raise HdmapError("Invalid configuration: " + "; ".join(problems) + ".")
        checkpoint, again = run_record.get("best_checkpoint"), False
    else:
        checkpoint = best_checkpoint(run_dir, run_record, "without it only from_predictions=true works")
        check_config(cfg)
        # without stored scores, the validation split is predicted again: the run's own only while its data is unchanged
        again = validation is None and not any(covered(k, ("data", "domain.source", "seed")) and not covered(k, TEST_ONLY_KEYS)
                                               for k in keys)
    if any(covered(k, THRESHOLD_KEYS) for k in keys) and validation is None and not again:
        fix = "drop from_predictions=true to predict them again" if from_predictions else "evaluate the run's own data"
        raise HdmapError(f"A new threshold ({', '.join(THRESHOLD_KEYS)}) needs the run's validation scores, and {run_dir} has no "
                         f"{VALIDATION_SCORES} (runs before it was added do not write it): {fix}.")
    return checkpoint, validation, again


def evaluate(run_dir: Path, overrides: list, out: str | None = None, from_predictions: bool = False) -> RunRecord:
    """Evaluate the run again (see the module docstring); returns the new record, written to <new dir>/metrics.json."""
    from hdmap_train.console import print_results
    from hdmap_train.run_plots import write_plots
    from hdmap_train.thresholds import choose_threshold

    start = time.perf_counter()
    run_record = finished_record(run_dir)
    cfg = apply_overrides(run_record["condition"]["config"], overrides)
    keys = [override.key_or_group for override in overrides]
    checkpoint, validation, predict_validation = check_request(run_dir, run_record, cfg, keys, from_predictions)
    examples, n_examples = {}, 0
    if from_predictions:
        tests, samples = predictions_again(run_dir, cfg, record_sources(run_record), "data.subgroups" in keys)
    out_dir = new_directory(run_dir, out)
    handler = log_to_file(out_dir / "evaluate.log")  # evaluate.log beside the new metrics.json
    try:
        OmegaConf.update(cfg, "paths.output_dir", str(out_dir), force_add=True)
        record = new_record(cfg, out_dir, record_sources(run_record))
        record.update(evaluated_from=str(run_dir.resolve()), best_checkpoint=str(checkpoint), data=run_record.get("data"),
                      training_info=run_record.get("training_info"),
                      evaluation={"from_predictions": from_predictions, "overrides": [o.input_line for o in overrides]},
                      provenance=provenance("cpu"))  # predicting again replaces it with the device's
        with written_however_it_ends(record, out_dir / RECORD_NAME):
            if not from_predictions:
                collector, samples = predict_again(cfg, checkpoint, out_dir, record)
                tests, examples, n_examples = {d: collector.scores(d) for d in samples}, collector.examples, collector.n_examples
                validation = collector.scores("validation") if predict_validation else validation
                if note := normalisation_note(record["data"], run_record.get("data") or {}):
                    record["evaluation"]["notes"] = [note]
                    log.warning("%s", note)
            evaluation = cfg.evaluation
            if any(covered(k, THRESHOLD_KEYS) for k in keys):
                chosen = choose_threshold(validation, evaluation.threshold, evaluation.threshold_quantile, evaluation.threshold_k)
            else:  # the run's own threshold, as it was
                chosen = run_record["validation"]
            predictions = record_results(record, chosen, tests, samples, evaluation.protocol)
            record["validation"]["threshold_from"] = str(run_dir.resolve())  # the run's own validation images, always
            write_score_tables(out_dir, predictions, validation)
            if cfg.evaluation.plots:
                write_plots(out_dir / "plots", predictions, record["validation"]["threshold"], record_sources(record), examples, n_examples)
            record["evaluation"]["seconds"] = round(time.perf_counter() - start, 3)
            record["status"] = "success"
        print_results(record)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    return record


def main(argv: list[str] | None = None) -> int:
    """Evaluate (exit 0); HdmapError: one line, exit 1; usage errors: exit 2."""
    return run_command(COMMAND, evaluate_from_arguments, argv)


def evaluate_from_arguments(options: dict, overrides: list) -> RunRecord:
    """evaluate() with the command line's options and overrides, logging to the terminal."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return evaluate(Path(options["run"]), overrides, options["out"], options["from_predictions"])


if __name__ == "__main__":
    sys.exit(main())
