"""The one declared metric table (hdmap_train.results) against what is computed and where it is shown."""

import ast
from pathlib import Path
from typing import get_type_hints

import numpy as np

from hdmap_train.console import results_table
from hdmap_train.metrics import image_metrics, transfer_metrics
from hdmap_train.results import (
    CONSOLE,
    DOMAIN_FIELDS,
    DOMAIN_METRICS,
    LONG,
    SHIFT_METRICS,
    TENSORBOARD,
    DomainResult,
    keys,
)
from hdmap_train.sweep.long_table import LONG_METRICS
from hdmap_train.tensorboard_log import metric_scalars

PACKAGE = Path(__file__).resolve().parents[1] / "hdmap_train"


def computed_result() -> dict:
    labels = np.array([0, 0, 0, 1, 1, 1])
    return {"domain": "domain_A", **image_metrics(labels, np.array([0.1, 0.2, 0.6, 0.5, 0.8, 0.9]), threshold=0.3)}


def test_every_computed_metric_has_one_entry_in_the_table() -> None:
    computed = set(computed_result()) - {"domain"}
    declared = [metric.key for metric in DOMAIN_METRICS]
    assert len(declared) == len(set(declared))
    assert computed == set(declared) | set(DOMAIN_FIELDS), "a metric of image_metrics has no entry in results.DOMAIN_METRICS"
    shift = set(transfer_metrics(0.9, [0.8, 0.7])) - {"transfer_ratio_note"}
    assert shift | {"official_score"} == {metric.key for metric in SHIFT_METRICS}  # official_score: protocol=dcase (test_dcase)


def test_the_record_schema_names_every_field_of_a_domain_result() -> None:
    assert set(get_type_hints(DomainResult)) == {"domain", "subgroups", *(m.key for m in DOMAIN_METRICS), *DOMAIN_FIELDS}


def test_the_console_tensorboard_and_long_table_show_what_the_table_says() -> None:
    result = computed_result()
    record = {"condition": {"name": "draem"}, "source_domain": "domain_A", "validation": {"threshold": 0.3},
              "source_results": result, "target_results": {"domain_B": {**result, "domain": "domain_B"}},
              **transfer_metrics(result["image_AUROC"], [result["image_AUROC"]]), "official_score": 0.7}
    headers = [column.header for column in results_table(record).columns]
    assert headers == ["domain", *(m.header for m in DOMAIN_METRICS if CONSOLE in m.shown), "n"]
    scalars = metric_scalars(record)
    assert {f"test/domain_B/{key}" for key in keys(TENSORBOARD)} <= set(scalars)
    assert {f"test/{key}" for key in keys(TENSORBOARD, SHIFT_METRICS)} <= set(scalars)
    assert list(LONG_METRICS) == keys(LONG)


def imported_modules(path: Path) -> set[str]:
    """Every hdmap_train module that `path` imports (at the top or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("hdmap_train")}


def test_the_train_and_evaluate_commands_are_siblings() -> None:
    assert "hdmap_train.train" not in imported_modules(PACKAGE / "evaluate.py")
    assert "hdmap_train.evaluate" not in imported_modules(PACKAGE / "train.py")
