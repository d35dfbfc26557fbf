"""What a run prints: the end-of-run results table (rich), its summary line, the data line, and the same text into
train.log.

Light: nothing here imports torch, Lightning or anomalib.
"""

import io
import logging

from rich import box
from rich.console import Console
from rich.table import Table

from hdmap_train.domains import SEPARATOR, evaluated_results
from hdmap_train.results import CONSOLE, shown

log = logging.getLogger(__name__)


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"

def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"

def summary_line(record: dict) -> str:
    """Model | source AUROC | avg target AUROC | transfer ratio | status (and error line) | fit time | run dir, on one
    line; the fit time only when the record has it (an evaluation's record: the time the evaluation took).
    """
    source = record.get("source_results") or {}
    status = record["status"]
    if record.get("error"):
        status += f" ({str(record['error']).strip().splitlines()[0][:160]})"
    if "evaluated_from" in record:  # an evaluation: what it took, not the run's training time
        seconds, what = (record.get("evaluation") or {}).get("seconds"), "evaluated in"
    else:
        seconds, what = (record.get("training_info") or {}).get("fit_seconds"), "fit"
    return (
        f"{record['condition']['model']} | source {record['source_domain']} AUROC {_number(source.get('image_AUROC'))}"
        f" | avg target AUROC {_number(record.get('avg_target_auroc'))}"
        f" | transfer ratio {_number(record.get('transfer_ratio'))} | {status}"
        + ("" if seconds is None else f" | {what} {seconds:.1f} s") + f" | {record['experiment_path']}"
    )

def log_to_files(text: str) -> None:
    """Write text as one INFO record to the root logger's file handlers only (train.log), not to the terminal."""
    entry = log.makeRecord(log.name, logging.INFO, __file__, 0, "%s", (text,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and entry.levelno >= handler.level:
            handler.handle(entry)

def print_results(record: dict) -> None:
    """Rich table (source row first and bold, each domain followed by its subgroups), then the summary line; the
    same as plain text into train.log.
    """
    table = results_table(record)
    lines = [f"results: {record['experiment_path']}/{{metrics.json,predictions.csv,plots/}}", summary_line(record)]
    console = Console()
    console.print(table)
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    plain = Console(file=io.StringIO(), width=100, color_system=None)
    plain.print(table)
    log_to_files("Results:\n" + plain.file.getvalue() + "\n".join(lines))

def results_table(record: dict) -> Table:
    """The results table: domains (and their subgroups) x the CONSOLE metrics, with the validation threshold; several
    sources: their test sets together first ('pooled'), then each domain.
    """
    validation = record["validation"]
    threshold, rule = validation["threshold"], validation.get("threshold_method", "quantile")
    table = Table(
        title=f"{record['condition']['name']}: trained on {record['source_domain']}",
        caption=f"F1 prec rec acc FPR: at the validation threshold {threshold:.4g} ({rule}), the same for every domain. "
        "oF1: F1 at the best threshold per domain (chosen with test labels: reference only). "
        "TPR@1/@5: TPR at FPR 1%/5%. n: normal/fault images."
        + (" pooled: the source domains' test sets together." if "source_domain_results" in record else ""),
        box=box.SIMPLE_HEAD, padding=(0, 0), pad_edge=False,
    )
    table.add_column("domain", no_wrap=True)
    columns = shown(CONSOLE)
    for metric in columns:
        table.add_column(metric.header, justify="right", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    for index, result in enumerate(evaluated_results(record)):
        name = "pooled" if SEPARATOR in result["domain"] else result["domain"]
        rows = [(name, result, "bold" if index == 0 else None)]
        rows += [(f" {name}", sub, "dim") for name, sub in result.get("subgroups", {}).items()]
        for name, metrics, style in rows:
            cells = [_cell(metrics.get(metric.key)) for metric in columns]
            table.add_row(name, *cells, f"{metrics['n_normal']}/{metrics['n_fault']}", style=style)
    return table

def data_line(data: dict) -> str:
    """The data summary of a run (datamodule.summary()) on one line, for train.log."""
    tests = ", ".join(f"{domain} {n}" for domain, n in data["test_samples"].items())
    validation = data["validation"]
    native = ", ".join("x".join(map(str, size)) for size in data["native_sizes"])
    normalization = data["normalization"]
    applied = normalization["applied"].get(next(iter(data["test_samples"])), {})
    numbers = f" shift {applied['shift']:.4g} scale {applied['scale']:.4g} on the source" if "scale" in applied else ""
    cache = data["cache"]
    kinds = sorted({cache["train"], cache["val"], *cache["test"].values()})
    manifest = data["manifest"]
    by_source = "".join(f" | {domain}: train {data['train_samples_by_source'][domain]}, validation "
                        f"{data['val_samples_by_source'][domain]}" for domain in data.get("sources", []))
    return (
        f"Data {data['root']}: train {data['train_samples']} ({data['train_images_per_epoch']} per epoch), validation "
        f"{data['val_samples']} ({validation['normal']} normal, {validation['fault']} fault; {validation['mode']}), "
        f"test {tests} | native {native} -> {'x'.join(map(str, data['image_size']))} ({data['resize']}, "
        f"{data['channels']} channel(s)) | normalisation {normalization['mode']} (stats {normalization['stats']}){numbers}"
        f" | cache {'/'.join(kinds)}{' on ' + cache['device'] if 'device' in cache else ''} (limit {cache['limit_mb']} MB)"
        f"{', pinned batches' if data.get('pin_memory') else ''} | manifest "
        + (f"sha256 {manifest['sha256'][:12]}" if manifest else "none (mapping not verified)") + by_source
    )
