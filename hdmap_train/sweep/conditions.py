"""Condition identity: jobs whose result-relevant config is the same form one condition, whatever their `name`.

A job's identity is its resolved config (metrics.json's condition.config) without the result-neutral keys
(hdmap_train.job_names.comparable_config) and without `name`, `seed` (seeds are repeats) and `domain`
(the source domain is a column of its own). Two jobs that differ in any other value are two conditions.
A value the model did not use is replaced by the one it ran with (effective_config): a memory-bank model
(PatchCore, PaDiM) trains one epoch whatever model.max_epochs says, so max_epochs does not split its jobs.
Each condition is shown by the model and the config values that differ between conditions of that
model (columns such as `model.module.learning_rate`), and a short label: `draem`, or `draem lr=0.001`.
"""

import copy
import json
import re
from typing import Any

import pandas as pd

from hdmap_train.job_names import comparable_config, config_differences, drop_keys

IDENTITY_DROPPED_KEYS = ("name", "seed", "domain")  # seeds and source domains are repeats / columns of one condition
ALIASES = {"learning_rate": "lr"}  # label names of a few long keys
# `${model.max_epochs}`, `${.module.backbone}` (relative) or `${oc.select:model.drop_single_leftover,true}`
INTERPOLATION = re.compile(r"\$\{(?:oc\.select:)?(\.*)([\w.]+?)(?:,[^}]*)?\}")


def identity(config: dict) -> dict:
    """The config values that decide a job's results, apart from its seed and source domain."""
    return drop_keys(comparable_config(config), IDENTITY_DROPPED_KEYS)


def effective_config(record: dict) -> dict | None:
    """A record's resolved config with the values the model really ran with: model.max_epochs and trainer.max_epochs
    as training_info.max_epochs_effective (anomalib's one epoch for memory-bank models); None without a config.
    """
    config = (record.get("condition") or {}).get("config")
    effective = (record.get("training_info") or {}).get("max_epochs_effective")
    if config is None or effective is None:
        return config
    config = copy.deepcopy(config)
    for section in ("model", "trainer"):
        if isinstance(config.get(section), dict) and "max_epochs" in config[section]:
            config[section]["max_epochs"] = effective
    return config


def lookup(config: dict, key: str) -> Any:
    """The value of a dotted key in a nested dict (None if absent)."""
    for part in key.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def interpolation_links(config: dict, prefix: str = "") -> dict[str, str]:
    """{key: origin key} of the values that only copy another key (an unresolved .hydra/config.yaml), e.g.
    {"trainer.max_epochs": "model.max_epochs"}: such keys say nothing beyond their origin.
    """
    links = {}
    for key, value in config.items():
        if isinstance(value, dict):
            links |= interpolation_links(value, f"{prefix}{key}.")
        elif isinstance(value, str) and (match := INTERPOLATION.fullmatch(value)):
            dots, origin = match.groups()
            base = prefix.split(".")[:-1]
            links[prefix + key] = ".".join([*base[: len(base) - len(dots) + 1], origin]) if dots else origin
    return links


def differing_keys(identities: list[dict], links: dict[str, str]) -> list[str]:
    """Keys whose value differs between any two identities, model keys first; a key that only copies another
    differing key (links) is left out.
    """
    keys = {key for other in identities[1:] for key in config_differences(identities[0], other)}
    column = {key: [json.dumps(lookup(i, key), sort_keys=True) for i in identities] for key in keys}
    keys = {key for key in keys if not (links.get(key) in keys and column[links[key]] == column[key])}
    return sorted(keys, key=lambda key: (not key.startswith("model."), key))


def short_names(keys: list[str]) -> dict[str, str]:
    """The shortest dotted suffix of each key that no other key shares ('learning_rate' as 'lr')."""
    names = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if n == len(parts) or not any(other != key and other.endswith("." + suffix) for other in keys):
                names[key] = ALIASES.get(suffix, suffix)
                break
    return names


def value_text(value: Any, digits: int) -> str:
    """A config value in a label: floats with `digits` significant digits, lists as JSON."""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def value_texts(values: list) -> list[str]:
    """Texts of one key's values with the fewest significant digits (3 or more) that keep distinct values apart."""
    distinct = len({json.dumps(v, sort_keys=True) for v in values})
    for digits in range(3, 18):
        texts = [value_text(v, digits) for v in values]
        if len(set(texts)) == distinct:
            break
    return texts


def cell(value: Any) -> Any:
    """A condition column cell: scalars as they are, lists and dicts as JSON."""
    return json.dumps(value, separators=(",", ":")) if isinstance(value, dict | list) else value


def condition_table(models: list[str | None], configs: list[dict | None], links: dict[str, str]) -> pd.DataFrame:
    """Per job: `condition` (its label) and one column per differing key (rows without a config: label = model).

    models[i], configs[i]: job i's model name and resolved config (None when its record is unreadable or
    missing); links: interpolation_links of the jobs' configs.
    """
    identities = [None if config is None else identity(config) for config in configs]
    keyed = {json.dumps(i, sort_keys=True, default=str): (model, i) for model, i in zip(models, identities, strict=True)
             if i is not None}
    labels, columns = {}, {}
    for model in sorted({model for model, _ in keyed.values()}, key=str):
        group = {key: i for key, (m, i) in keyed.items() if m == model}
        varying = differing_keys(list(group.values()), links)
        names = short_names(varying)
        texts = {key: value_texts([lookup(i, key) for i in group.values()]) for key in varying}
        for index, key in enumerate(group):
            labels[key] = " ".join([str(model), *(f"{names[k]}={texts[k][index]}" for k in varying)])
        columns |= dict.fromkeys(varying)
    rows = []
    for model, i in zip(models, identities, strict=True):
        key = None if i is None else json.dumps(i, sort_keys=True, default=str)
        rows.append({"condition": model if key is None else labels[key], **{k: None if i is None else cell(lookup(i, k)) for k in columns}})
    return pd.DataFrame(rows, columns=["condition", *columns])
