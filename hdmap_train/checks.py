"""Every check of a run's config, in one place, before any work: each problem named with its key and its fix.

`check_config` (train and evaluate call it first) collects every problem of the composed config into one
HdmapError. `data_problems` is its part for the `data` group; the datamodule itself checks nothing (it only
builds datasets and loaders), so Python code that builds one directly calls `check_data` first. What can only
be found on disk (a missing domain folder, an unreadable image, a cache budget) is reported where it is read.

Light: nothing here imports torch, Lightning or anomalib, so a config error answers at once.
"""

import re
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hdmap_train.domains import (
    HDMAP_DOMAINS,
    SEVERAL_SOURCES_NORMALIZATION,
    domain_folder,
    domain_problems,
    shared_normalization,
    source_domains,
)
from hdmap_train.errors import HdmapError

RESIZE_METHODS = ("nearest", "bilinear", "aspect_pad", "pad")  # hdmap_train.data.images.resize
VALIDATION_MODES = ("normal", "synthetic_faults")
MP_CONTEXTS = (None, "fork", "spawn", "forkserver")
PIN_MEMORY = ("auto", True, False)
NORMALIZATION_MODES = ("none", "minmax_fixed", "minmax", "zscore", "per_image")  # hdmap_train.data.normalization
STATS_FROM = ("source", "per_domain")
THRESHOLD_METHODS = ("quantile", "gamma", "mean_std")  # hdmap_train.thresholds
PROTOCOLS = ("standard", "dcase")  # evaluation.protocol: dcase adds hdmap_train.dcase's scores


def check_config(cfg: DictConfig) -> None:
    """Reject invalid values before anything runs, naming the key and the fix (logger=mlflow without mlflow: its own line)."""
    from hdmap_train.mlflow_log import require_mlflow

    require_mlflow(cfg)
    problems = []
    if not (isinstance(cfg.trainer.max_epochs, int) and cfg.trainer.max_epochs >= 1):
        problems.append(f"trainer.max_epochs={cfg.trainer.max_epochs} must be a positive integer (model.max_epochs sets it)")
    problems += threshold_problems(cfg.evaluation)
    if cfg.model.monitor_mode not in ("min", "max"):
        problems.append(f"model.monitor_mode={cfg.model.monitor_mode} must be 'min' (a loss) or 'max' (e.g. an AUROC)")
    if cfg.model.monitor is not None and not int(cfg.model.early_stopping_patience or 0) >= 1:
        problems.append(f"model.early_stopping_patience={cfg.model.early_stopping_patience} must be at least 1")
    if not (cfg.get("threads") in (None, "auto") or (isinstance(cfg.threads, int) and cfg.threads >= 1)):
        problems.append(f"threads={cfg.threads} must be a positive integer, auto or null (torch's default)")
    data = OmegaConf.to_container(cfg.data, resolve=True)
    problems += data_problems(data, cfg.domain.source, list(cfg.domain.targets), dataset_domains(cfg.data))
    if problems:
        raise HdmapError("Invalid configuration: " + "; ".join(problems) + ".")


def threshold_problems(evaluation: Mapping) -> list[str]:
    """The threshold and protocol keys of `evaluation` (hdmap_train.thresholds, hdmap_train.dcase), each problem with its fix."""
    problems = []
    if not 0.0 < number(evaluation["threshold_quantile"]) <= 1.0:
        problems.append(f"evaluation.threshold_quantile={evaluation['threshold_quantile']} must be a number in (0, 1] (e.g. 0.99)")
    if evaluation.get("threshold", "quantile") not in THRESHOLD_METHODS:
        problems.append(f"evaluation.threshold={evaluation['threshold']} must be one of {', '.join(THRESHOLD_METHODS)}")
    if not number(evaluation.get("threshold_k", 3.0)) >= 0:
        problems.append(f"evaluation.threshold_k={evaluation['threshold_k']} must be a number >= 0 (e.g. 3)")
    if evaluation.get("protocol", "standard") not in PROTOCOLS:
        problems.append(f"evaluation.protocol={evaluation['protocol']} must be one of {', '.join(PROTOCOLS)}")
    return problems


def check_data(source, targets: list[str], **data) -> None:
    """data_problems of a datamodule's keyword arguments (only those given are checked), as one HdmapError."""
    if problems := data_problems(data, source, targets):
        raise HdmapError("; ".join(problems) + ".")


def data_problems(data: Mapping, source, targets: list[str], known: list[str] | None = None) -> list[str]:
    """What is wrong with the `data` options (a config or a datamodule's keyword arguments: absent keys are not
    checked) for these source and target domains; known: the dataset's domain folders, when they can be listed.
    """
    problems = []
    if "val_fraction" in data and not 0.0 < number(data["val_fraction"]) < 1.0:
        problems.append(f"data.val_fraction={data['val_fraction']} must lie strictly between 0 and 1 (e.g. 0.1)")
    for key in ("train_batch_size", "eval_batch_size"):
        if key in data and not number(data[key]) >= 1:
            problems.append(f"data.{key}={data[key]} must be at least 1")
    size = data.get("image_size", [1, 1])
    if len(size) != 2 or not all(number(s) >= 1 for s in size):
        problems.append(f"data.image_size={list(size)} must be [height, width] with positive integers")
    if data.get("synthetic") is None and data.get("root") and not Path(data["root"]).expanduser().is_dir():
        problems.append(f"Dataset root {data['root']} does not exist: set data.root=<dir> (or HDMAP_ROOT), or use data=synthetic")
    allowed = {"channels": ((1, 3), "must be 3 (grey replicated, ImageNet backbones) or 1"),
               "resize": (RESIZE_METHODS, f"is unknown; choose one of {', '.join(RESIZE_METHODS)}"),
               "validation": (VALIDATION_MODES, f"is unknown; choose one of {', '.join(VALIDATION_MODES)}"),
               "multiprocessing_context": (MP_CONTEXTS, "must be fork, spawn, forkserver or null"),
               "pin_memory": (PIN_MEMORY, "must be auto, true or false")}
    problems += [f"data.{key}={data[key]} {why}" for key, (values, why) in allowed.items() if key in data and data[key] not in values]
    if data.get("device_cache") and number(data.get("num_workers", 0)) > 0:
        problems.append(f"data.device_cache=true keeps the images on the device, which DataLoader workers cannot share; set "
                        f"data.num_workers=0 (now {data['num_workers']}) or data.device_cache=false")
    if data.get("device_cache") and data.get("pin_memory") is True:
        problems.append("data.pin_memory=true has nothing to pin with data.device_cache=true; set data.pin_memory=auto")
    normalization = {"mode": "none", "stats": "source", "bounds": None, **(data.get("normalization") or {})}
    domains = [*source_domains(source), *(domain_folder(str(t)) for t in targets)]
    problems += normalization_problems(normalization["mode"], normalization["stats"], normalization["bounds"], domains)
    if len(source_domains(source)) > 1 and not shared_normalization(normalization["mode"], normalization["stats"]):
        problems.append(SEVERAL_SOURCES_NORMALIZATION)
    try:
        check_subgroups(data.get("subgroups"))
    except HdmapError as exc:
        problems.append(str(exc).rstrip("."))
    return problems + domain_problems(source, list(targets), known)


def normalization_problems(mode: str, stats_from: str, bounds: Mapping | None, domains: list[str]) -> list[str]:
    """Unknown modes and missing or invalid fixed bounds, naming the config key."""
    if mode not in NORMALIZATION_MODES:
        return [f"data.normalization.mode={mode} is unknown; choose one of {', '.join(NORMALIZATION_MODES)}"]
    if stats_from not in STATS_FROM:
        return [f"data.normalization.stats={stats_from} is unknown; choose one of {', '.join(STATS_FROM)}"]
    if mode != "minmax_fixed":
        return []
    for domain in domains:
        pair = (bounds or {}).get(domain, (bounds or {}).get(domain.removeprefix("domain_")))
        if pair is None:
            return [f"data.normalization.bounds has no [min, max] for {domain}; add e.g. bounds.{domain.removeprefix('domain_')}=[0,1]"]
        if not float(pair[1]) > float(pair[0]):
            return [f"data.normalization.bounds for {domain} is {list(pair)}; max must be greater than min"]
    return []


def check_subgroups(rules: list[dict] | None) -> list[dict]:
    """Validate `data.subgroups`: a list of {name, and one of index: [start, stop], fraction: [a, b], pattern: regex}."""
    checked = []
    for rule in rules or []:
        kinds = [k for k in ("index", "fraction", "pattern") if rule.get(k) is not None]
        if not rule.get("name") or len(kinds) != 1:
            msg = (
                f"data.subgroups entry {rule} needs a name and exactly one of index: [start, stop], "
                "fraction: [from, to] or pattern: <regex on the file name>."
            )
            raise HdmapError(msg)
        if kinds[0] == "pattern":
            try:
                re.compile(rule["pattern"])
            except re.error as exc:
                raise HdmapError(f"data.subgroups pattern {rule['pattern']!r} is not a valid regex: {exc}.") from exc
        elif len(rule[kinds[0]]) != 2:
            raise HdmapError(f"data.subgroups {kinds[0]} {rule[kinds[0]]} must be [start, stop] (stop may be null).")
        checked.append(dict(rule))
    return checked


def number(value) -> float:
    """Value as a float; NaN (which fails every range check) when it is not a number (abc, null, a list)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def dataset_domains(data: DictConfig) -> list[str] | None:
    """The domain folders of the dataset (data.synthetic's domains, or data.root's domain_* folders); None when the
    root is not there (check_config names that itself).
    """
    if data.synthetic is not None:
        return [domain_folder(str(name)) for name in data.synthetic.get("domains", HDMAP_DOMAINS)]
    if data.get("layout") is not None:  # another folder layout: its scan names a missing domain itself
        return None
    root = Path(data.root).expanduser() if data.root else None
    if root is None or not root.is_dir():
        return None
    return sorted(path.name for path in root.iterdir() if path.is_dir() and path.name.startswith("domain_"))
