"""results_long.csv: one row per successful job x evaluated domain x subgroup ('' = the whole domain) x metric,
each with its provenance (project commit and dirty flag, CPU, GPU, device, dataset manifest sha256, package versions).
"""

import pandas as pd

from hdmap_train.domains import short_domain
from hdmap_train.provenance import git
from hdmap_train.results import LONG, keys
from hdmap_train.sweep.collect import Sweep
from hdmap_train.sweep.conditions import lookup

LONG_METRICS = tuple(keys(LONG))  # the metrics of each evaluated domain and subgroup (hdmap_train.results)
VERSION_PREFIX = "version."  # results_long.csv column of a package version: version.<package>, e.g. version.torch


def project_commit() -> str:
    """`git rev-parse HEAD` of the project folder now; '' when it is no git checkout or git is missing."""
    return git("rev-parse", "HEAD") or ""


def provenance(record: dict, commit: str) -> dict:
    """Where one job's numbers come from: the commit, dirty flag, CPU and GPU the run recorded (records before
    2026-12-05: `commit`, the report's, and no more), device (trainer.accelerator), dataset sha256, package versions.
    """
    manifest = (record.get("data") or {}).get("manifest") or {}
    recorded = record.get("provenance") or {}
    return {
        "commit": recorded.get("commit") or commit, "dirty": recorded.get("dirty"), "cpu": recorded.get("cpu", ""),
        "gpu": recorded.get("gpu", ""),
        "device": lookup(record["condition"].get("config") or {}, "trainer.accelerator") or "",
        "dataset_sha256": manifest.get("sha256") or "",
        **{VERSION_PREFIX + name: value for name, value in (record.get("versions") or {}).items()},
    }


def evaluated(record: dict) -> list[tuple[str, str, dict]]:
    """(domain, subgroup, metrics) of the source and every target domain, each domain followed by its subgroups.

    Several sources: each source domain on its own (source_domain_results), not their pooled test sets.
    """
    by_source = record.get("source_domain_results") or {record["source_domain"]: record["source_results"]}
    results = {short_domain(domain): result for domain, result in {**by_source, **record["target_results"]}.items()}
    return [(domain, name, metrics) for domain, result in results.items()
            for name, metrics in [("", result), *(result.get("subgroups") or {}).items()]]


def long_table(sweep: Sweep, commit: str | None = None) -> pd.DataFrame:
    """results_long.csv of the sweep's successful jobs (commit: project_commit() unless given)."""
    commit = project_commit() if commit is None else commit
    identity = ["job", "condition", *sweep.condition_columns, "model", "source"]
    rows = []
    for job in sweep.table[sweep.table["status"] == "success"].to_dict("records"):
        record = sweep.records[job["job"]]
        fixed = {key: job[key] for key in identity}
        origin = provenance(record, commit)
        for target, subgroup, metrics in evaluated(record):
            base = {**fixed, "target": target, "subgroup": subgroup, "seed": job["seed"]}
            rows += [{**base, "metric": metric, "value": metrics.get(metric), **origin} for metric in LONG_METRICS]
    versions = sorted({key for row in rows for key in row if key.startswith(VERSION_PREFIX)})
    columns = [*identity, "target", "subgroup", "seed", "metric", "value", "commit", "dirty", "cpu", "gpu", "device", "dataset_sha256",
               *versions]
    return pd.DataFrame(rows, columns=columns)
