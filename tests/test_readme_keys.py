"""README's metrics.json section names only keys that a real metrics.json has."""

import json
import re
from pathlib import Path

import pytest

from hdmap_train.train import run
from helpers.config import PROJECT_ROOT
from helpers.runs import tiny_run_cfg

# Backticked words of that section that are values or other files' names, not keys.
NOT_KEYS = {"success", "failed", "domain_A", "domain_A+domain_B", "manifest.json", "null", "memory_bank", "gaussian",
            "source_domains", "source_domain_results", "status", "error", "json", "max_memory_allocated"}


def keys(node) -> set[str]:
    """Every key of a nested record."""
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in keys(v)}
    return {k for v in node for k in keys(v)} if isinstance(node, list) else set()


def readme_record_keys() -> set[str]:
    """The backticked names of README's `metrics.json` holds ... paragraph (efficiency's {a, b} lists included)."""
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text[text.index("`metrics.json` holds"):text.index("A run that fails (bad input")]
    found = set()
    for word in re.findall(r"`([^`]+)`", section):
        found |= set(re.findall(r"[A-Za-z_0-9]+", word)) if "{" in word else {word.split(".")[-1]}
    return {w for w in found if re.fullmatch(r"[A-Za-z_0-9]+", w)} - NOT_KEYS


@pytest.mark.slow
def test_every_metrics_key_the_readme_names_is_in_a_real_record(tiny_dataset: Path, tmp_path: Path, hf_cache: Path) -> None:
    run(tiny_run_cfg("patchcore", tiny_dataset, tmp_path, "weights=random"), tmp_path)  # a memory bank, too
    record = json.loads((tmp_path / "metrics.json").read_text())
    named = readme_record_keys()
    assert {"parameters_total", "inference_images_per_second", "rows", "dims", "weights"} <= named
    assert named - keys(record) == set()
