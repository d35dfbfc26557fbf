"""Sweep job folder names, and the config keys that do not change a run's results.

conf/hydra/default.yaml names each sweep job folder `${hdmap_job_dir:${hydra.overrides.task}}`: the job's
overrides, sorted and joined by ',' (the text of Hydra's override_dirname, e.g. `domain=A,model=draem`)
when that is at most MAX_NAME_LENGTH characters of file-name-safe text; otherwise a readable shortened
form plus a hash of the full override list (`domain=A,experiment=quickstart,max_epochs=1-3f9c0e12ab`).
Overrides of JOB_NAME_EXCLUDED_KEYS stay out of the name, so a re-run of a sweep into its
hydra.sweep.dir finds its finished jobs again whatever the paths, worker counts or plots.

The resolver is registered when this module is imported; hdmap_train.train imports it, so it is there in
the launching process and in joblib/loky and submitit workers (they import the task function's module).
"""

import copy
import hashlib
import json
import re
from collections.abc import Iterable

from omegaconf import OmegaConf

# Dotted keys whose value does not change a run's results (metrics.json's numbers). A key covers all
# keys below it ("paths" covers paths.cache_dir; "hydra" covers hydra.launcher.n_jobs); a group override
# such as hydra/launcher=gpus counts as hydra.launcher. Left out of job folder names, summary columns,
# and (hdmap_train.train) the comparison of a re-run's config with a finished job's.
RESULT_NEUTRAL_OVERRIDE_KEYS = (
    "ckpt_path",                    # where training resumes from, not what it trains
    "optimized_metric",             # what a sweep job returns to the sweeper
    "gpus_per_job",
    "jobs_per_gpu",
    "threads",                      # how many CPU threads compute it
    "logger",                       # where values are logged besides metrics.json
    "evaluation.plots",             # pictures only
    "trainer.enable_progress_bar",
    "data.num_workers",
    "data.cache_limit_mb",
    "data.pin_memory",              # how batches reach the GPU, not what they hold
    "data.device_cache",            # where the images are kept and resized (the same values within float rounding)
    "data.accelerator",             # a copy of trainer.accelerator, which counts
    "data.cache_dir",               # where synthetic datasets are generated (the data is named by data.synthetic)
    "paths",                        # directories; the data itself is named by data.root
    "hydra",                        # launcher, sweep and run directories
)
# Paths that do decide the results but stay out of folder names: the same sweep launched from another
# checkout or machine finds its jobs again (a re-run still compares them and retrains when they differ).
PATH_OVERRIDE_KEYS = ("data.root",)
JOB_NAME_EXCLUDED_KEYS = RESULT_NEUTRAL_OVERRIDE_KEYS + PATH_OVERRIDE_KEYS

MAX_NAME_LENGTH = 80
HASH_LENGTH = 10          # hex digits of sha256: 40 bits
ITEM_LENGTH = 24          # when the shortened items do not all fit, each is cut to this many characters
# Characters kept in a folder name: no '/', '\\', spaces, quotes or shell characters ($ * ? ; | & < > ! `).
SAFE_NAME = re.compile(r"[A-Za-z0-9._,=+\-@:~\[\]{}()%]*")
UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._=+\-@:~\[\]{}()%]+")   # in shortened items, ',' is unsafe too
RESOLVER = "hdmap_job_dir"


def override_key(line: str) -> str:
    """The config key or group an override line sets, as Hydra's Override.key_or_group: '+a.b@p=1' -> 'a.b'."""
    return line.split("=", 1)[0].lstrip("~+").split("@", 1)[0].strip()


def covered(key: str, keys: Iterable[str]) -> bool:
    """Whether the dotted key (or group, '/' counting as '.') is one of keys or lies below one."""
    dotted = key.replace("/", ".")
    return any(dotted == k or dotted.startswith(k + ".") for k in keys)


def name_overrides(overrides: Iterable[str], excluded: Iterable[str] = JOB_NAME_EXCLUDED_KEYS) -> list[str]:
    """The override lines that name a job: excluded keys left out, sorted (Hydra's override_dirname order)."""
    excluded = tuple(excluded)
    return sorted(str(line) for line in overrides if not covered(override_key(str(line)), excluded))


def is_safe_name(name: str) -> bool:
    """A single, ordinary folder name: safe characters only, not '.'/'..'/hidden, not an option ('-x')."""
    return SAFE_NAME.fullmatch(name) is not None and not name.startswith((".", "-"))


def override_hash(lines: list[str]) -> str:
    """A short hash of the exact override lines (stable across processes and Python versions)."""
    return hashlib.sha256(json.dumps(lines).encode()).hexdigest()[:HASH_LENGTH]


def short_item(line: str) -> str:
    """'model.module.reconstructive_width=8' -> 'reconstructive_width=8'; runs of unsafe characters -> '_'."""
    key, sep, value = line.partition("=")
    prefix = key[: len(key) - len(key.lstrip("~+"))]
    last = re.split(r"[./]", key.lstrip("~+").split("@", 1)[0])[-1]
    return UNSAFE_RUN.sub("_", prefix + last).strip("_") + sep + UNSAFE_RUN.sub("_", value).strip("_")


def job_dir_name(overrides: Iterable[str], excluded: Iterable[str] = JOB_NAME_EXCLUDED_KEYS,
                 max_length: int = MAX_NAME_LENGTH) -> str:
    """The folder name of a sweep job with these override lines (see the module docstring).

    Same lines (in any order) -> same name; different lines -> different names (the hash); never a '/'.
    No naming override at all gives '' (the job runs in the sweep directory itself, as Hydra's
    override_dirname did).
    """
    lines = name_overrides(overrides, excluded)
    plain = ",".join(lines)
    if len(plain) <= max_length and is_safe_name(plain):
        return plain
    suffix = "-" + override_hash(lines)
    budget = max_length - len(suffix)
    # Shallow keys (groups such as domain=, model=, experiment=) first: they say most about a job.
    items = [short_item(line) for line in sorted(lines, key=lambda line: (override_key(line).count("."), line))]
    if len(",".join(items)) > budget:  # cut long values (paths, lists) so that more items fit
        items = [item[:ITEM_LENGTH] for item in items]
    readable = ""
    for item in filter(None, items):
        candidate = f"{readable},{item}" if readable else item
        if len(candidate) > budget:
            break
        readable = candidate
    if not readable and items:  # even the first item is too long: cut it
        readable = items[0][:budget]
    readable = readable.lstrip(".-_") or "job"
    return readable + suffix


def drop_keys(config: dict, keys: Iterable[str] = RESULT_NEUTRAL_OVERRIDE_KEYS) -> dict:
    """A copy of a resolved config dict without the dotted keys (e.g. for comparing two runs' configs).

    drop_keys({"data": {"root": "/x", "num_workers": 4}, "seed": 1}, ["data.num_workers"])
    == {"data": {"root": "/x"}, "seed": 1}; keys that are not there are ignored.
    """
    result = copy.deepcopy(config)
    for key in keys:
        *parents, last = key.split(".")
        node = result
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return result


def comparable_config(config: dict) -> dict:
    """A resolved config dict without its result-neutral keys: equal for two runs that give the same results."""
    return drop_keys(config, RESULT_NEUTRAL_OVERRIDE_KEYS)


# Keys added later with a default that keeps the old behaviour, other than null, false or {}: a record written before
# one existed ran as its default does.
ADDED_DEFAULTS = {"evaluation.threshold": "quantile", "evaluation.threshold_k": 3.0, "evaluation.protocol": "standard"}


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (sorted), e.g. ['data.root', 'seed'].

    A key that only one side has, at null, false, {} or its ADDED_DEFAULTS value there, is no difference: keys are
    added with a default that keeps the old behaviour (data.layout: null, model.random_weights: false), so a record
    written before one was added is still the same config.
    """
    keys = sorted(set(a) | set(b))
    found = []
    for key in keys:
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            found += config_differences(left, right, f"{prefix}{key}.")
        elif (key in a) != (key in b):
            added = left if key in a else right
            default = ADDED_DEFAULTS.get(f"{prefix}{key}", {})
            if not (added is None or added is False or added == {} or added == default):
                found.append(f"{prefix}{key}")
        elif left != right:
            found.append(f"{prefix}{key}")
    return found


def _resolve_job_dir(overrides) -> str:
    """OmegaConf resolver: ${hdmap_job_dir:${hydra.overrides.task}} -> the job's folder name."""
    if overrides is None:
        return ""
    lines = OmegaConf.to_container(overrides) if OmegaConf.is_config(overrides) else overrides
    if isinstance(lines, str):
        lines = [lines]
    return job_dir_name(lines)


OmegaConf.register_new_resolver(RESOLVER, _resolve_job_dir, replace=True)
