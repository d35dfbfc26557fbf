"""Paired comparison of conditions tested on the same images (`python -m hdmap_train.compare`).

Runs come from run or sweep directories (collect's job discovery, conditions' labels). A job of one condition
pairs with the other condition's job of the same source domain and seed, and only when both were tested on
the same images: the dataset manifest sha256 when both record one, and always the (domain, file name, label)
set of predictions.csv. Per source and evaluated domain: the AUROC difference (mean over the paired seeds)
with a paired percentile bootstrap interval over test images; per condition pair: a Wilcoxon signed-rank
test over the (source, seed, domain) pairs of AUROCs; per condition: its mean rank over the (source,
evaluated domain) blocks.
"""

import logging
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score

from hdmap_train.domains import short_domain
from hdmap_train.errors import HdmapError
from hdmap_train.sweep.collect import job_dirs, read_job, written_config
from hdmap_train.sweep.conditions import condition_table, effective_config, interpolation_links
from hdmap_train.sweep.markdown import number, text
from hdmap_train.sweep.tables import markdown_table

log = logging.getLogger(__name__)
N_RESAMPLES, SEED, CONFIDENCE = 2000, 0, 0.95
COLUMNS = ["condition_a", "condition_b", "source", "domain", "n_seeds", "auroc_a", "auroc_b", "difference", "ci_low",
           "ci_high", "n_resamples", "wilcoxon_n", "wilcoxon_statistic", "wilcoxon_p", "mean_rank_a", "mean_rank_b"]


@dataclass
class Job:
    """One successful run: its folder, record, condition label, and its test images by evaluated domain."""

    folder: Path
    record: dict
    condition: str = ""
    _images: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    @property
    def source(self) -> str:
        """A, B, ...: the domain it was trained on."""
        return short_domain(self.record["source_domain"])

    @property
    def seed(self) -> int | None:
        """Its config's seed (the repeat it is)."""
        return (self.record["condition"].get("config") or {}).get("seed")

    def images(self) -> dict[str, pd.DataFrame]:
        """{domain: predictions.csv rows (name, label, anomaly_score)} sorted by label and file name, source first."""
        if not self._images:
            path = self.folder / "predictions.csv"
            if not path.is_file():
                raise HdmapError(f"{path} is missing: compare needs every run's per-image scores (predictions.csv).")
            frame = pd.read_csv(path, usecols=["domain", "image_path", "label", "anomaly_score"])
            frame["name"] = [Path(p).name for p in frame["image_path"]]
            for domain, rows in frame.groupby("domain", sort=False):
                if rows.duplicated(["name", "label"]).any():
                    raise HdmapError(f"{path}: {domain} holds two test images of one file name and label; compare cannot align them.")
                self._images[str(domain)] = rows.sort_values(["label", "name"], ignore_index=True)[["name", "label", "anomaly_score"]]
        return self._images


@dataclass
class Comparison:
    """What compare() found: the conditions in order, comparison.csv rows, mean ranks, and notes per condition pair."""

    conditions: list[str]
    rows: pd.DataFrame
    ranks: pd.DataFrame
    notes: dict[tuple[str, str], list[str]]
    n_resamples: int
    seed: int


def find_jobs(directories: list[Path]) -> list[Job]:
    """The successful runs of each directory (a run dir, or a sweep dir's job folders), labelled by condition.

    Evaluations (records with evaluated_from) found below a directory are left out; a condition found in more
    than one directory is told apart by it ("draem [multirun/2026-11-22/10-00-00]").
    """
    jobs, origins, links = [], [], {}
    for directory in directories:
        folders = [directory] if (directory / "metrics.json").is_file() else job_dirs(directory)
        if not folders:
            raise HdmapError(f"{directory} holds no run (metrics.json) and no sweep job folders: pass run or sweep directories.")
        for folder in folders:
            config = written_config(folder)
            links |= interpolation_links(config)
            row, record = read_job(folder, config)
            if record is None or row["status"] != "success":
                log.warning("%s left out: %s (%s)", folder, row["status"], row["error"])
            elif folder == directory or "evaluated_from" not in record:
                jobs.append(Job(folder, record))
                origins.append(str(directory))
    if not jobs:
        raise HdmapError(f"No successful runs in {', '.join(map(str, directories))}: nothing to compare.")
    configs = [effective_config(job.record) for job in jobs]
    labels = condition_table([job.record["condition"]["model"] for job in jobs], configs, links)["condition"].tolist()
    places: dict[str, set[str]] = {}
    for label, origin in zip(labels, origins, strict=True):
        places.setdefault(label, set()).add(origin)
    for job, label, origin in zip(jobs, labels, origins, strict=True):
        job.condition = f"{label} [{origin}]" if len(places[label]) > 1 else label
    return jobs


def pair_jobs(a: list[Job], b: list[Job]) -> tuple[list[tuple[Job, Job]], list[Job]]:
    """Jobs of conditions a and b with the same source domain and seed, and the jobs left without a partner."""
    keyed = []
    for jobs in (a, b):
        found: dict[tuple, Job] = {}
        for job in jobs:
            key = (job.source, job.seed)
            if key in found:
                raise HdmapError(f"{found[key].folder} and {job.folder} are both '{job.condition}' on source {key[0]} with seed "
                                 f"{key[1]}: pass directories in which each condition, source and seed occurs once.")
            found[key] = job
        keyed.append(found)
    pairs = [(job, keyed[1][key]) for key, job in keyed[0].items() if key in keyed[1]]
    unpaired = [job for mine, other in (keyed, keyed[::-1]) for key, job in mine.items() if key not in other]
    return pairs, unpaired


def check_same_images(first: Job, other: Job, domains: list[str]) -> None:
    """HdmapError (one line) unless both jobs were tested on the same dataset (manifest) and images of `domains`: equal
    test fingerprints (data.test_fingerprints: file paths, labels and bytes), or for records without them equal
    (file name, label) sets, with a warning that the content was not compared.
    """
    hashes = [((job.record.get("data") or {}).get("manifest") or {}).get("sha256") for job in (first, other)]
    what = f"Cannot pair {first.folder} ({first.condition}) with {other.folder} ({other.condition})"
    if None not in hashes and hashes[0] != hashes[1]:
        raise HdmapError(f"{what}: their datasets differ (manifest sha256 {hashes[0][:12]} vs {hashes[1][:12]}). "
                         "Compare runs tested on the same data.")
    prints = [(job.record.get("data") or {}).get("test_fingerprints") or {} for job in (first, other)]
    for domain in domains:  # the content of the test sets, whatever the layout
        if domain in prints[0] and domain in prints[1] and prints[0][domain] != prints[1][domain]:
            raise HdmapError(f"{what}: their {domain} test sets differ in content (fingerprints {prints[0][domain][:12]} vs "
                             f"{prints[1][domain][:12]}: other files, labels or bytes). Compare runs tested on the same images.")
    unprinted = [domain for domain in domains if not (domain in prints[0] and domain in prints[1])]
    if unprinted:
        log.warning("%s or %s has no test fingerprint of %s (recorded before they were): paired by file names and labels "
                    "only", first.folder, other.folder, ", ".join(unprinted))
    for domain in unprinted:
        keys = [set(zip(job.images()[domain]["name"], job.images()[domain]["label"], strict=True)) for job in (first, other)]
        if keys[0] != keys[1]:
            only = [sorted(keys[0] - keys[1]), sorted(keys[1] - keys[0])]
            name, label = (only[0] or only[1])[0]
            raise HdmapError(f"{what}: their {domain} test images differ ({len(only[0])} only in the first, {len(only[1])} only "
                             f"in the second, e.g. {name} label {label}). Compare runs tested on the same images.")


def resample_indices(labels: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, images) indices: each row draws the normal images (label 0), then the fault images, with
    replacement within their class (np.random.default_rng(seed).integers), so every resample keeps both classes.
    """
    rng = np.random.default_rng(seed)
    normal, fault = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    return np.concatenate([normal[rng.integers(0, normal.size, (n_resamples, normal.size))],
                           fault[rng.integers(0, fault.size, (n_resamples, fault.size))]], axis=1)


def resampled_auroc(scores: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """AUROC of each resample (a row of indices), ties counting one half as in roc_auc_score, from image counts."""
    rows, n = indices.shape[0], labels.size
    counts = np.bincount((indices + n * np.arange(rows)[:, None]).ravel(), minlength=rows * n).reshape(rows, n)
    normal, fault = labels == 0, labels == 1
    order = np.argsort(scores[normal], kind="stable")
    normal_scores = scores[normal][order]
    below = np.concatenate([np.zeros((rows, 1)), np.cumsum(counts[:, normal][:, order], axis=1)], axis=1)
    lower = below[:, np.searchsorted(normal_scores, scores[fault], "left")]  # normals scored below each fault
    not_higher = below[:, np.searchsorted(normal_scores, scores[fault], "right")]  # ... plus the tied ones
    pairs = counts[:, fault].sum(axis=1) * counts[:, normal].sum(axis=1)
    return (counts[:, fault] * (lower + not_higher) / 2).sum(axis=1) / pairs


def paired_difference(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, n_resamples: int, seed: int) -> dict:
    """Mean AUROCs, their difference (a - b, mean over seeds) and its paired percentile bootstrap interval.

    scores_a, scores_b: (seeds, images), row k of both from the same seed, columns aligned with labels.
    """
    auroc_a = np.array([roc_auc_score(labels, s) for s in scores_a])
    auroc_b = np.array([roc_auc_score(labels, s) for s in scores_b])
    indices = resample_indices(labels, n_resamples, seed)
    differences = np.mean([resampled_auroc(a, labels, indices) - resampled_auroc(b, labels, indices)
                           for a, b in zip(scores_a, scores_b, strict=True)], axis=0)
    low, high = np.percentile(differences, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    return {"n_seeds": len(scores_a), "auroc_a": float(auroc_a.mean()), "auroc_b": float(auroc_b.mean()),
            "difference": float((auroc_a - auroc_b).mean()), "ci_low": float(low), "ci_high": float(high)}


def wilcoxon_test(a: np.ndarray, b: np.ndarray) -> dict:
    """scipy.stats.wilcoxon (two-sided) of paired AUROCs; statistic and p None when no pair differs."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    result = stats.wilcoxon(a, b) if np.any(a != b) else None
    return {"wilcoxon_n": int(a.size), "wilcoxon_statistic": None if result is None else float(result.statistic),
            "wilcoxon_p": None if result is None else float(result.pvalue)}


def domain_aurocs(jobs: list[Job]) -> pd.DataFrame:
    """condition, source, seed, domain, auroc of every job and evaluated domain holding both classes."""
    rows = [{"condition": job.condition, "source": job.source, "seed": job.seed, "domain": short_domain(domain),
             "auroc": roc_auc_score(images["label"], images["anomaly_score"])}
            for job in jobs for domain, images in job.images().items() if images["label"].nunique() == 2]
    return pd.DataFrame(rows, columns=["condition", "source", "seed", "domain", "auroc"])


def mean_ranks(aurocs: pd.DataFrame, conditions: list[str]) -> pd.DataFrame:
    """Each condition's mean rank (1 = highest AUROC, ties averaged) over the (source, evaluated domain) blocks in
    which every condition has an AUROC (its mean over seeds).
    """
    means = aurocs.groupby(["source", "domain", "condition"])["auroc"].mean().unstack("condition").reindex(columns=conditions)
    complete = means.dropna()
    ranks = complete.rank(axis=1, ascending=False, method="average").mean()
    return pd.DataFrame({"condition": conditions, "mean_rank": [ranks.get(c) for c in conditions], "blocks": len(complete)})


def compare_pair(a: list[Job], b: list[Job], n_resamples: int, seed: int) -> tuple[list[dict], list[str]]:
    """comparison.csv rows of conditions a and b (one per source and shared evaluated domain, the Wilcoxon test
    over all of them repeated on each), and notes on what was left out.
    """
    pairs, unpaired = pair_jobs(a, b)
    notes = [f"no partner (same source and seed): {job.folder} ({job.condition}, seed {job.seed})" for job in unpaired]
    rows, aurocs = [], ([], [])
    for source in dict.fromkeys(job_a.source for job_a, _ in pairs):
        cell = [pair for pair in pairs if pair[0].source == source]
        jobs = [job for pair in cell for job in pair]
        domains = [d for d in jobs[0].images() if all(d in job.images() for job in jobs)]
        left_out = sorted({d for job in jobs for d in job.images()} - set(domains))
        if left_out:
            notes.append(f"source {source}: {', '.join(left_out)} not compared (not evaluated by every paired run)")
        for job in jobs[1:]:
            check_same_images(jobs[0], job, domains)
        for domain in domains:
            labels = jobs[0].images()[domain]["label"].to_numpy()
            if np.unique(labels).size < 2:
                notes.append(f"source {source}: {domain} not compared (its test images are of one class only)")
                continue
            scores = [np.stack([pair[k].images()[domain]["anomaly_score"].to_numpy() for pair in cell]) for k in (0, 1)]
            result = paired_difference(labels, scores[0], scores[1], n_resamples, seed)
            for k in (0, 1):
                aurocs[k].extend(roc_auc_score(labels, s) for s in scores[k])
            rows.append({"source": source, "domain": short_domain(domain), **result, "n_resamples": n_resamples})
    test = wilcoxon_test(*aurocs)
    return [{"condition_a": a[0].condition, "condition_b": b[0].condition, **row, **test} for row in rows], notes


def compare(directories: list[Path], n_resamples: int = N_RESAMPLES, seed: int = SEED) -> Comparison:
    """Every pair of the conditions found in the directories, compared on their paired jobs; HdmapError when no
    pair of conditions has a paired job or paired jobs were tested on different images.
    """
    jobs = find_jobs(directories)
    conditions = list(dict.fromkeys(job.condition for job in jobs))
    if len(conditions) < 2:
        raise HdmapError(f"Only one condition ({conditions[0]}) in {', '.join(map(str, directories))}: compare needs two.")
    by_condition = {c: [job for job in jobs if job.condition == c] for c in conditions}
    ranks = mean_ranks(domain_aurocs(jobs), conditions)
    rank_of = dict(zip(ranks["condition"], ranks["mean_rank"], strict=True))
    rows, notes = [], {}
    for a, b in combinations(conditions, 2):
        found, notes[(a, b)] = compare_pair(by_condition[a], by_condition[b], n_resamples, seed)
        rows += [{**row, "mean_rank_a": rank_of[a], "mean_rank_b": rank_of[b]} for row in found]
    if not rows:
        raise HdmapError("No two conditions share a source domain and seed with both classes in a test set: nothing to pair. "
                         + "; ".join(note for found in notes.values() for note in found[:3]))
    return Comparison(conditions, pd.DataFrame(rows, columns=COLUMNS), ranks, notes, n_resamples, seed)


def signed(value: float | None) -> str:
    """A difference with its sign, 3 decimals ('-' when none)."""
    return "-" if value is None or pd.isna(value) else f"{value:+.3f}"


def comparison_markdown(comparison: Comparison) -> str:
    """comparison.md: per condition pair the AUROC differences with intervals and the Wilcoxon test; the mean ranks."""
    level = round(100 * CONFIDENCE)
    lines = ["# Paired comparison", "",
             f"Δ = AUROC(a) − AUROC(b), the mean over seeds of jobs paired by source domain and seed; {level}% paired "
             f"bootstrap interval over test images ({comparison.n_resamples} resamples, seed {comparison.seed}; normal and "
             "fault images resampled with replacement within their class, the same images for both conditions)."]
    for (a, b), notes in comparison.notes.items():
        rows = comparison.rows[(comparison.rows["condition_a"] == a) & (comparison.rows["condition_b"] == b)]
        lines += ["", f"## a = {a}, b = {b}", ""]
        if rows.empty:
            lines += ["No paired jobs."]
        else:
            header = ["source", "domain", "seeds", "AUROC a", "AUROC b", "Δ AUROC", f"{level}% CI"]
            cells = [[r.source, r.domain, str(r.n_seeds), number(r.auroc_a), number(r.auroc_b), signed(r.difference),
                      f"[{signed(r.ci_low)}, {signed(r.ci_high)}]"] for r in rows.itertuples()]
            first = rows.iloc[0]
            test = ("no pair differs, no test" if pd.isna(first.wilcoxon_p)
                    else f"W = {first.wilcoxon_statistic:g}, p = {first.wilcoxon_p:.4g}")
            lines += [*markdown_table(header, cells), "",
                      f"Wilcoxon signed-rank test over {first.wilcoxon_n} (source, seed, domain) pairs of AUROCs: {test}."]
        lines += [f"- {note}" for note in notes]
    ranks = comparison.ranks
    lines += ["", "## Mean rank across domains", "",
              f"1 = highest AUROC in a (source, evaluated domain) block (mean over seeds; ties share their rank), over the "
              f"{ranks['blocks'].iloc[0]} blocks in which every condition was evaluated.", "",
              *markdown_table(["condition", "mean rank"], [[text(c), number(r, 2)] for c, r in zip(ranks["condition"], ranks["mean_rank"],
                                                                                               strict=True)])]
    return "\n".join(lines) + "\n"
