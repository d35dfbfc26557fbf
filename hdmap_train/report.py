"""Sweep summary from the job folders' metrics.json: summary.csv, summary.md and summary.png.

Written into the sweep directory at the end of every multirun (hdmap_train.callbacks.SweepSummary), and
rebuilt for any sweep directory, finished or not, by

    python -m hdmap_train.report multirun/2026-11-22/10-00-00
"""

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from hdmap_train.errors import HdmapError
from hdmap_train.job_names import RESULT_NEUTRAL_OVERRIDE_KEYS, covered, override_key

log = logging.getLogger(__name__)
SUMMARY_FILES = ("summary.csv", "summary.md", "summary.png")
FIRST_COLUMNS = ["job", "condition", "model", "source", "status", "source_AUROC", "source_F1"]
LAST_COLUMNS = ["avg_target_AUROC", "transfer_ratio", "fit_seconds", "error"]
OVERRIDE_PREFIX = "override."  # summary.csv column of a job override: override.<key>, e.g. override.model.max_epochs


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Folders of the sweep's jobs: those holding Hydra's .hydra/ folder or a file named exactly metrics.json (any depth).

    A record kept aside under another name (metrics.corrupt-<time>.json) does not make a folder a job.
    """
    found = {path.parent for path in sweep_dir.rglob(".hydra") if path.is_dir()}
    found |= {path.parent for path in sweep_dir.rglob("metrics.json") if path.is_file()}
    return sorted(found)


def short_domain(domain: str) -> str:
    """domain_A -> A."""
    return domain.removeprefix("domain_")


def record_row(record: dict) -> dict:
    """One summary row from a metrics.json record (successful or failed)."""
    source = short_domain(record["source_domain"])
    error = (record.get("error") or "").strip()
    row = {
        "condition": record["condition"]["name"].removesuffix(f"_{source}"),  # default name: <model>_<source domain>
        "model": record["condition"]["model"],
        "source": source,
        "status": record["status"],
        "error": error.splitlines()[0] if error else "",
        "fit_seconds": (record.get("training_info") or {}).get("fit_seconds"),
    }
    if record["status"] != "success":
        return row
    source_auroc = record["source_results"]["image_AUROC"]
    average = record.get("avg_target_auroc")
    row |= {
        "source_AUROC": source_auroc,
        "source_F1": record["source_results"]["image_F1Score"],
        "avg_target_AUROC": average,
        "transfer_ratio": average / source_auroc if average is not None and source_auroc else None,
    }
    for domain, result in record["target_results"].items():
        row[f"AUROC_{short_domain(domain)}"] = result["image_AUROC"]
        row[f"F1_{short_domain(domain)}"] = result["image_F1Score"]
    return row


def config_row(job_dir: Path) -> dict:
    """condition/model/source from the job's .hydra/config.yaml, for a job without a readable record ({} if none)."""
    config_file = job_dir / ".hydra" / "config.yaml"
    try:
        config = OmegaConf.load(config_file)
        model, source = OmegaConf.select(config, "model.name"), OmegaConf.select(config, "domain.source")
    except FileNotFoundError:
        return {}
    except Exception as exc:  # a corrupt config.yaml only loses these three cells
        log.warning("%s is unreadable (%s); its job is listed without model and source", config_file, exc)
        return {}
    return {"condition": model, "model": model, "source": source}


def missing_row(job_dir: Path) -> dict:
    """A job folder without metrics.json (running, killed, or stopped before its run started)."""
    return {"status": "missing", "error": "no metrics.json", **config_row(job_dir)}


def unreadable_row(metrics: Path, exc: Exception) -> dict:
    """A job whose metrics.json cannot be read or is not a run record (truncated, corrupt, hand-edited)."""
    problem = str(exc).splitlines()[0] if str(exc) else ""
    error = (f"{metrics} is unreadable ({type(exc).__name__}{': ' + problem if problem else ''}); "
             "re-run the sweep into the same hydra.sweep.dir to train this job again")
    return {"status": "unreadable", "error": error, **config_row(metrics.parent)}


def job_row(job_dir: Path) -> dict:
    """The summary row of one job folder: from its metrics.json, or missing / unreadable."""
    metrics = job_dir / "metrics.json"
    if not metrics.is_file():
        return missing_row(job_dir)
    try:
        record = json.loads(metrics.read_text())
        return record_row(record)
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        return unreadable_row(metrics, exc)


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


def collect(sweep_dir: Path) -> pd.DataFrame:
    """One row per job folder of the sweep directory, in the summary.csv column order."""
    if not sweep_dir.is_dir():
        raise HdmapError(f"Sweep directory {sweep_dir} does not exist: pass a folder such as multirun/<date>/<time>.")
    rows = []
    for job_dir in job_dirs(sweep_dir):
        job = str(job_dir.relative_to(sweep_dir)) if job_dir != sweep_dir else job_dir.name
        rows.append({"job": job, **job_overrides(job_dir), **job_row(job_dir)})
    if not rows:
        raise HdmapError(f"{sweep_dir} holds no job folders (.hydra/ or metrics.json): pass a sweep directory such as multirun/<date>/<time>.")
    table = pd.DataFrame(rows)
    override_columns = sorted(c for c in table.columns if c.startswith(OVERRIDE_PREFIX))
    domain_columns = sorted((c for c in table.columns if c.startswith(("AUROC_", "F1_"))), key=lambda c: (c.split("_", 1)[1], c[0]))
    return table.reindex(columns=FIRST_COLUMNS[:1] + override_columns + FIRST_COLUMNS[1:] + domain_columns + LAST_COLUMNS)


def status_counts(table: pd.DataFrame) -> str:
    """'2 succeeded, 1 failed, 1 missing, 0 unreadable'."""
    counts = table["status"].value_counts()
    return (f"{counts.get('success', 0)} succeeded, {counts.get('failed', 0)} failed, {counts.get('missing', 0)} missing, "
            f"{counts.get('unreadable', 0)} unreadable")


def varying_overrides(table: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """The override columns whose value differs between jobs, and the overrides every job shares (key: value)."""
    varying, shared = [], {}
    for column in (c for c in table.columns if c.startswith(OVERRIDE_PREFIX)):
        values = table[column].fillna("(not set)")
        if values.nunique() > 1:
            varying.append(column)
        else:
            shared[column.removeprefix(OVERRIDE_PREFIX)] = values.iloc[0]
    return varying, shared


def auroc_matrix(rows: pd.DataFrame) -> pd.DataFrame:
    """AUROC of each condition (rows) on each evaluated domain (columns); repeated conditions are averaged."""
    entries = []
    for row in rows.to_dict("records"):
        entries.append((row["condition"], row["source"], row["source_AUROC"]))
        entries += [(row["condition"], key.removeprefix("AUROC_"), value) for key, value in row.items() if key.startswith("AUROC_")]
    long = pd.DataFrame(entries, columns=["condition", "domain", "AUROC"]).dropna()
    return long.pivot_table(index="condition", columns="domain", values="AUROC", aggfunc="mean")


def number(value: float | None, digits: int = 3) -> str:
    """A table cell: the value rounded, or '-' when there is none."""
    return "-" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a GitHub-flavoured Markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(row) + " |" for row in rows]


def grid_cell(jobs: pd.DataFrame) -> str:
    """A conditions x sources cell: avg target AUROC (source AUROC) of the successful jobs, else their status."""
    done = jobs[jobs["status"] == "success"]
    if done.empty:
        return "/".join(sorted(jobs["status"].unique()))
    text = f"{number(done['avg_target_AUROC'].mean())} ({number(done['source_AUROC'].mean())})"
    return text + (f" mean of {len(done)}" if len(done) > 1 else "")


def summary_markdown(table: pd.DataFrame, sweep_dir: Path) -> str:
    """summary.md: counts, conditions x source domains, every job, failures with their error line."""
    counts = table["status"].value_counts()
    lines = [
        f"# Sweep summary: {sweep_dir}", "",
        f"{len(table)} jobs: {counts.get('success', 0)} succeeded, {counts.get('failed', 0)} failed, "
        f"{counts.get('missing', 0)} missing (no metrics.json), {counts.get('unreadable', 0)} unreadable (corrupt metrics.json).", "",
    ]
    varying, shared = varying_overrides(table)
    if shared:
        lines += ["Overrides of every job: " + ", ".join(f"`{key}={value}`" for key, value in shared.items()), ""]
    jobs = table.dropna(subset=["condition", "source"])
    if len(jobs):
        sources = sorted(jobs["source"].unique())
        grid = [[condition, *(grid_cell(jobs[(jobs["condition"] == condition) & (jobs["source"] == source)]) for source in sources)]
                for condition in sorted(jobs["condition"].unique())]
        lines += ["## Avg target AUROC (source AUROC), conditions x source domains", ""]
        lines += markdown_table(["condition", *sources], grid) + [""]
    lines += ["## Jobs", ""]
    lines += markdown_table(
        ["job", *(c.removeprefix(OVERRIDE_PREFIX) for c in varying), "status", "source AUROC", "avg target AUROC",
         "transfer ratio", "fit s"],
        [[f"`{r['job']}`", *("-" if pd.isna(r[c]) else str(r[c]).replace("|", "\\|") for c in varying), r["status"], number(r["source_AUROC"]),
          number(r["avg_target_AUROC"]), number(r["transfer_ratio"]), number(r["fit_seconds"], 1)]
         for r in table.to_dict("records")],
    ) + [""]
    for status, title in (("failed", "Failed jobs"), ("missing", "Missing results (running, killed, or stopped before the run)"),
                          ("unreadable", "Unreadable results (corrupt or truncated metrics.json)")):
        bad = table[table["status"] == status]
        if len(bad):
            lines += [f"## {title}", ""] + [f"- `{r.job}`: {r.error}" for r in bad.itertuples()] + [""]
    return "\n".join(lines)


def heatmap_figure(table: pd.DataFrame) -> Figure:
    """AUROC heatmaps, conditions x evaluated domains, one panel per source domain (failed jobs marked)."""
    jobs = table.dropna(subset=["condition", "source"])
    sources, conditions = sorted(jobs["source"].unique()), sorted(jobs["condition"].unique())
    done = jobs[jobs["status"] == "success"]
    domains = sorted(set(done["source"]) | {c.removeprefix("AUROC_") for c in done.columns if c.startswith("AUROC_")})
    figure = Figure(figsize=(max(4.0, 0.9 * len(domains) * len(sources) + 2.0), 1.5 + 0.45 * len(conditions)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    if done.empty:
        figure.text(0.5, 0.5, "no successful job yet", ha="center", va="center")
        return figure
    axes = figure.subplots(1, len(sources), squeeze=False)[0]
    for ax, source in zip(axes, sources, strict=True):
        matrix = auroc_matrix(done[done["source"] == source]).reindex(index=conditions, columns=domains).to_numpy(dtype=float)
        image = ax.imshow(matrix, cmap="RdYlGn", vmin=0.5, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(domains)), [f"{d}\n(source)" if d == source else d for d in domains])
        ax.set_yticks(range(len(conditions)), conditions)
        ax.set_title(f"trained on {source}")
        for (i, j), value in np.ndenumerate(matrix):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=8)
        for i, condition in enumerate(conditions):
            statuses = set(jobs[(jobs["source"] == source) & (jobs["condition"] == condition)]["status"])
            if statuses and "success" not in statuses:
                ax.text((len(domains) - 1) / 2, i, "/".join(sorted(statuses)), ha="center", va="center", color="grey")
    figure.colorbar(image, ax=list(axes), label="image AUROC", shrink=0.8)
    return figure


def write_summary(sweep_dir: Path) -> pd.DataFrame:
    """Write summary.csv, summary.md and summary.png into sweep_dir; returns the table."""
    table = collect(sweep_dir)
    table.to_csv(sweep_dir / "summary.csv", index=False)
    (sweep_dir / "summary.md").write_text(summary_markdown(table, sweep_dir))
    heatmap_figure(table).savefig(sweep_dir / "summary.png")
    return table


def main(argv: list[str] | None = None) -> int:
    """`python -m hdmap_train.report SWEEP_DIR`: rebuild the summary files; prints where they are."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m hdmap_train.report SWEEP_DIR   (e.g. multirun/2026-11-22/10-00-00)", file=sys.stderr)
        return 2
    sweep_dir = Path(args[0])
    try:
        table = write_summary(sweep_dir)
    except HdmapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(table)} jobs ({status_counts(table)})")
    print("\n".join(str(sweep_dir / name) for name in SUMMARY_FILES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
