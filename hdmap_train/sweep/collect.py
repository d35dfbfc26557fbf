"""Read a sweep directory: one summary row per job folder (success, failed, missing, unreadable), with its
overrides, condition, what the job cost (metrics.json `efficiency`; empty for older records) and the records
of the readable jobs.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from hdmap_train.domains import short_domain, source_domains, source_label
from hdmap_train.errors import HdmapError
from hdmap_train.job_names import RESULT_NEUTRAL_OVERRIDE_KEYS, covered, override_key
from hdmap_train.metrics import record_transfer_metrics
from hdmap_train.results import COST_METRICS, JOBS, SHIFT_METRICS, load_record, shown
from hdmap_train.sweep.conditions import condition_table, effective_config, interpolation_links, lookup

log = logging.getLogger(__name__)
DOMAIN_COLUMNS = shown(JOBS)  # per evaluated domain: <header>_<domain> (AUROC_B), the source's as source_<header>
FIRST_COLUMNS = ["job", "condition", "model", "source", "seed", "status", *(f"source_{m.header}" for m in DOMAIN_COLUMNS)]
SHIFT_COLUMNS = [m.key for m in shown(JOBS, SHIFT_METRICS)]
# metrics.json efficiency (hdmap_train.efficiency.run_efficiency): parameters_total, test-set inference rate, peak
# memory (CUDA allocated on a GPU, peak RSS on a CPU), the memory bank (PatchCore's coreset or PaDiM's Gaussian)
EFFICIENCY_COLUMNS = [m.key for m in shown(JOBS, COST_METRICS)]
LAST_COLUMNS = [*SHIFT_COLUMNS, "transfer_ratio_note", "fit_seconds", *EFFICIENCY_COLUMNS, "inference_device", "weights", "error"]
OVERRIDE_PREFIX = "override."  # summary.csv column of a job override: override.<key>, e.g. override.model.max_epochs


@dataclass
class Sweep:
    """What collect() read: the summary table (one row per job), the readable records by job, the condition columns."""

    table: pd.DataFrame
    records: dict[str, dict]
    condition_columns: list[str]


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Folders of the sweep's jobs: those holding Hydra's .hydra/ folder or a file named exactly metrics.json (any depth).

    A record kept aside under another name (metrics.corrupt-<time>.json) does not make a folder a job, nor does
    an output folder of `python -m hdmap_train.prepare` (outputs/prepare/<date>/<time>/), nor a re-evaluation
    inside a job (<job>/evaluations/<time>/ of `python -m hdmap_train.evaluate`: pass it as a directory of its own).
    """
    found = {path.parent for path in sweep_dir.rglob(".hydra") if path.is_dir()}
    found |= {path.parent for path in sweep_dir.rglob("metrics.json") if path.is_file()}
    return sorted(folder for folder in found if not is_prepare_output(folder) and not is_evaluation_inside(folder, found))


def is_evaluation_inside(folder: Path, jobs: set[Path]) -> bool:
    """<job>/evaluations/<name>/ below another job folder of the same search."""
    return folder.parent.name == "evaluations" and folder.parent.parent in jobs


def is_prepare_output(folder: Path) -> bool:
    """A folder with prepare.log and neither metrics.json nor a training config (one with a model) in .hydra/."""
    return ((folder / "prepare.log").is_file() and not (folder / "metrics.json").is_file()
            and "model" not in written_config(folder))


def mebibytes(count: int | None) -> float | None:
    """Bytes in MiB, None for none."""
    return None if count is None else count / 2**20


def efficiency_row(record: dict) -> dict:
    """The EFFICIENCY_COLUMNS and inference_device of a record's `efficiency` block ({} without one: older runs)."""
    found = record.get("efficiency") or {}
    if not found:
        return {}
    store = found.get("memory_bank") or found.get("gaussian") or {}
    return {"parameters_total": found.get("parameters_total"), "inference_images_per_second": found.get("inference_images_per_second"),
            "peak_memory_mb": mebibytes(found.get("peak_memory_bytes")), "memory_bank_mb": mebibytes(store.get("bytes")),
            "inference_device": found.get("device")}


def record_row(record: dict) -> dict:
    """One summary row from a metrics.json record (successful or failed): source `A` (or `A+B`), source AUROC/F1
    (several sources: pooled), AUROC/F1 per evaluated domain (each source domain of several among them).
    """
    error = (record.get("error") or "").strip()
    row = {
        "model": record["condition"]["model"],
        "source": short_domain(record["source_domain"]),
        "seed": (record["condition"].get("config") or {}).get("seed"),
        "status": record["status"],
        "error": error.splitlines()[0] if error else "",
        "fit_seconds": (record.get("training_info") or {}).get("fit_seconds"),
        "weights": (record.get("weights") or {}).get("mode"),  # pretrained | unverified | random | none (empty: older runs)
        **efficiency_row(record),
    }
    if record["status"] != "success":
        return row
    shift = record_transfer_metrics(record)
    row |= {f"source_{m.header}": record["source_results"][m.key] for m in DOMAIN_COLUMNS}
    row |= {key: shift[key] if key in shift else record.get(key) for key in [*SHIFT_COLUMNS, "transfer_ratio_note"]}
    for domain, result in {**(record.get("source_domain_results") or {}), **record["target_results"]}.items():
        row |= {f"{m.header}_{short_domain(domain)}": result[m.key] for m in DOMAIN_COLUMNS}
    return row


def written_config(job_dir: Path) -> dict:
    """The job's .hydra/config.yaml as written (interpolations unresolved); {} if absent or unreadable."""
    config_file = job_dir / ".hydra" / "config.yaml"
    try:
        config = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False)
    except FileNotFoundError:
        return {}
    except Exception as exc:  # a corrupt config.yaml only loses model, source and the interpolation links
        log.warning("%s is unreadable (%s); its job is listed without model and source", config_file, exc)
        return {}
    return config if isinstance(config, dict) else {}


def config_row(config: dict) -> dict:
    """model/source from the job's written config, for a job without a readable record ({} if none)."""
    if not config:
        return {}
    source = lookup(config, "domain.source")
    return {"model": lookup(config, "model.name"), "source": None if source is None else short_domain(source_label(source_domains(source)))}


def unreadable_row(metrics: Path, exc: Exception, config: dict) -> dict:
    """A job whose metrics.json cannot be read or is not a run record (truncated, corrupt, hand-edited)."""
    problem = str(exc).splitlines()[0] if str(exc) else ""
    error = (f"{metrics} is unreadable ({type(exc).__name__}{': ' + problem if problem else ''}); "
             "re-run the sweep into the same hydra.sweep.dir to train this job again")
    return {"status": "unreadable", "error": error, **config_row(config)}


def read_job(job_dir: Path, config: dict) -> tuple[dict, dict | None]:
    """The summary row of one job folder and its record (None when missing or unreadable); config: written_config."""
    metrics = job_dir / "metrics.json"
    if not metrics.is_file():  # running, killed, or stopped before its run started
        return {"status": "missing", "error": "no metrics.json", **config_row(config)}, None
    try:
        record = load_record(metrics)
        return record_row(record), record
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        return unreadable_row(metrics, exc, config), None


def job_overrides(job_dir: Path) -> dict[str, str]:
    """The job's overrides from .hydra/overrides.yaml as {override.<key>: value}, result-neutral keys left out."""
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        return {}
    try:
        lines = OmegaConf.to_container(OmegaConf.load(overrides_file))
        if not isinstance(lines, list):
            raise ValueError("not a list of overrides")
    except Exception as exc:
        log.warning("%s is unreadable (%s); its job is listed without its overrides", overrides_file, exc)
        return {}
    columns = {}
    for line in map(str, lines):
        key = override_key(line)
        if not covered(key, RESULT_NEUTRAL_OVERRIDE_KEYS):
            value = line.split("=", 1)[1] if "=" in line else "(deleted)" if line.startswith("~") else ""
            columns[OVERRIDE_PREFIX + key] = value
    return columns


def collect(sweep_dir: Path) -> Sweep:
    """Every job folder of the sweep directory as a summary row (summary.csv column order), grouped into conditions."""
    if not sweep_dir.is_dir():
        raise HdmapError(f"Sweep directory {sweep_dir} does not exist: pass a folder such as multirun/<date>/<time>.")
    rows, records, links = [], {}, {}
    for job_dir in job_dirs(sweep_dir):
        job = str(job_dir.relative_to(sweep_dir)) if job_dir != sweep_dir else job_dir.name
        config = written_config(job_dir)
        links |= interpolation_links(config)
        row, record = read_job(job_dir, config)
        rows.append({"job": job, **job_overrides(job_dir), **row})
        if record is not None:
            records[job] = record
    if not rows:
        msg = f"{sweep_dir} holds no job folders (.hydra/ or metrics.json): pass a sweep directory such as multirun/<date>/<time>."
        raise HdmapError(msg)
    table = pd.DataFrame(rows)
    for column in ("seed", "parameters_total"):  # integers, also beside missing jobs and records without them
        table[column] = pd.to_numeric(table.get(column, pd.Series(index=table.index, dtype=float)), errors="coerce").astype("Int64")
    configs = [effective_config(records[job]) if job in records else None for job in table["job"]]
    conditions = condition_table(table.get("model", pd.Series(index=table.index, dtype=object)).tolist(), configs, links)
    table = pd.concat([table, conditions], axis=1)
    condition_columns = [c for c in conditions.columns if c != "condition"]
    override_columns = sorted(c for c in table.columns if c.startswith(OVERRIDE_PREFIX))
    prefixes = [f"{m.header}_" for m in DOMAIN_COLUMNS]
    domain_columns = sorted((c for c in table.columns if c.startswith(tuple(prefixes))),
                            key=lambda c: (c.split("_", 1)[1], prefixes.index(c.split("_", 1)[0] + "_")))
    order = FIRST_COLUMNS[:1] + override_columns + FIRST_COLUMNS[1:2] + condition_columns + FIRST_COLUMNS[2:] + domain_columns
    return Sweep(table.reindex(columns=order + LAST_COLUMNS), records, condition_columns)
