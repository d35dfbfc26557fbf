"""Paired comparison of conditions tested on the same images (`python -m hdmap_train.compare`).

Runs come from run or sweep directories (collect's job discovery, conditions' labels). A job of one condition
pairs with the other condition's job of the same source domain and seed, and only when both were tested on
the same images (check_same_images). Per source and evaluated domain: the AUROC difference (mean over the paired
seeds) with two intervals, a paired bootstrap over test images (sweep.bootstrap) and a t-interval over seeds; per
condition pair: a paired t-test and a Wilcoxon signed-rank test over the (source, seed) units, Holm-corrected over
the pairs; per condition: its mean rank over the units (sweep.significance). Where every paired run was scored with
evaluation.protocol=dcase, DCASE's official score of each run (over the domains both runs of a pair evaluated) is
compared the same way, per source with a seed-level interval and over the units with the two tests.
"""

import logging
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from hdmap_train.dcase import official_score
from hdmap_train.domains import short_domain
from hdmap_train.errors import HdmapError
from hdmap_train.sweep.bootstrap import paired_difference
from hdmap_train.sweep.collect import job_dirs, read_job, written_config
from hdmap_train.sweep.conditions import condition_table, effective_config, interpolation_links
from hdmap_train.sweep.significance import holm, paired_tests, ranks_and_tests, seed_interval, unit_table

log = logging.getLogger(__name__)
N_RESAMPLES, SEED = 2000, 0
# ci_low/ci_high: the image-level bootstrap; seed_ci_*: the t-interval of the per-seed differences; t_*, wilcoxon_*: the
# tests over the pair's (source, seed) units, *_holm: Holm-corrected over the condition pairs.
COLUMNS = ["condition_a", "condition_b", "source", "domain", "n_seeds", "auroc_a", "auroc_b", "difference", "ci_low",
           "ci_high", "seed_ci_low", "seed_ci_high", "n_resamples", "units", "t_statistic", "t_p", "wilcoxon_n",
           "wilcoxon_statistic", "wilcoxon_p", "mean_rank_a", "mean_rank_b"]
# official_score.csv: DCASE's official score of the paired runs, per source (mean over seeds) and the pair's unit tests
OFFICIAL_COLUMNS = ["condition_a", "condition_b", "source", "n_seeds", "official_a", "official_b", "difference", "seed_ci_low",
                    "seed_ci_high", "units", "t_statistic", "t_p", "wilcoxon_n", "wilcoxon_statistic", "wilcoxon_p"]


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
    """What compare() found: the conditions in order, comparison.csv rows, the ranking, and notes per condition pair."""

    conditions: list[str]
    rows: pd.DataFrame
    official: pd.DataFrame  # OFFICIAL_COLUMNS + t_p_holm, wilcoxon_p_holm; empty unless runs were scored with protocol=dcase
    ranking: dict  # significance.ranks_and_tests: units, mean_ranks, friedman, nemenyi
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


def domain_aurocs(jobs: list[Job]) -> pd.DataFrame:
    """condition, source, seed, domain, auroc of every job and evaluated domain holding both classes."""
    rows = [{"condition": job.condition, "source": job.source, "seed": job.seed, "domain": short_domain(domain),
             "auroc": roc_auc_score(images["label"], images["anomaly_score"])}
            for job in jobs for domain, images in job.images().items() if images["label"].nunique() == 2]
    return pd.DataFrame(rows, columns=["condition", "source", "seed", "domain", "auroc"])


def run_official_score(job: Job, domains: list[str]) -> float:
    """DCASE's official score (hdmap_train.dcase) of the job's test images of `domains`."""
    images = pd.concat([job.images()[d].assign(domain=d) for d in domains], ignore_index=True)
    labels, domain = images["label"].to_numpy(dtype=int), images["domain"].to_numpy(dtype=str)
    names = [d for d in domains if ((domain == d) & (labels == 0)).any()]
    return official_score(labels, images["anomaly_score"].to_numpy(dtype=float), domain, names)


def official_rows(cells: dict[str, tuple[list[tuple[Job, Job]], list[str]]]) -> list[dict]:
    """official_score.csv rows of one condition pair: per source (paired runs, their shared domains) the mean official
    score of each condition over the seeds, its difference and seed interval; the unit tests repeated on each row.
    """
    rows, units = [], []
    for source, (cell, domains) in cells.items():
        scores = np.array([[run_official_score(job, domains) for job in pair] for pair in cell])  # seeds x (a, b)
        units += scores.tolist()
        low, high = seed_interval(scores[:, 0] - scores[:, 1])
        rows.append({"source": source, "n_seeds": len(cell), "official_a": scores[:, 0].mean(), "official_b": scores[:, 1].mean(),
                     "difference": (scores[:, 0] - scores[:, 1]).mean(), "seed_ci_low": low, "seed_ci_high": high})
    values = np.array(units).reshape(-1, 2)
    test = paired_tests(values[:, 0], values[:, 1])
    return [{**row, **test} for row in rows]


def compare_pair(a: list[Job], b: list[Job], n_resamples: int, seed: int) -> tuple[list[dict], list[dict], list[str]]:
    """comparison.csv rows of conditions a and b (one per source and shared evaluated domain: the image-level
    bootstrap and the seed-level interval; the tests over the paired (source, seed) units repeated on each), their
    official_score.csv rows (when every paired run has DCASE scores) and notes on what was left out.
    """
    pairs, unpaired = pair_jobs(a, b)
    notes = [f"no partner (same source and seed): {job.folder} ({job.condition}, seed {job.seed})" for job in unpaired]
    rows, units, cells = [], {}, {}  # units: (source, seed) -> per-domain (AUROC a, AUROC b); cells: source -> (pairs, domains)
    for source in dict.fromkeys(job_a.source for job_a, _ in pairs):
        cell = [pair for pair in pairs if pair[0].source == source]
        jobs = [job for pair in cell for job in pair]
        domains = [d for d in jobs[0].images() if all(d in job.images() for job in jobs)]
        left_out = sorted({d for job in jobs for d in job.images()} - set(domains))
        if left_out:
            notes.append(f"source {source}: {', '.join(left_out)} not compared (not evaluated by every paired run)")
        for job in jobs[1:]:
            check_same_images(jobs[0], job, domains)
        cells[source] = (cell, domains)
        for domain in domains:
            labels = jobs[0].images()[domain]["label"].to_numpy()
            if np.unique(labels).size < 2:
                notes.append(f"source {source}: {domain} not compared (its test images are of one class only)")
                continue
            scores = [np.stack([pair[k].images()[domain]["anomaly_score"].to_numpy() for pair in cell]) for k in (0, 1)]
            result = paired_difference(labels, scores[0], scores[1], n_resamples, seed)
            per_seed = [[roc_auc_score(labels, s) for s in scores[k]] for k in (0, 1)]
            for (job_a, _), auroc_a, auroc_b in zip(cell, *per_seed, strict=True):
                units.setdefault((source, job_a.seed), []).append((auroc_a, auroc_b))
            low, high = seed_interval(np.subtract(*per_seed))
            rows.append({"source": source, "domain": short_domain(domain), **result, "seed_ci_low": low, "seed_ci_high": high,
                         "n_resamples": n_resamples})
    means = np.array([np.mean(values, axis=0) for values in units.values()]).reshape(-1, 2)
    test = paired_tests(means[:, 0], means[:, 1])
    names = {"condition_a": a[0].condition, "condition_b": b[0].condition}
    scored = ["dcase" in job.record for cell, _ in cells.values() for pair in cell for job in pair]
    official = official_rows(cells) if scored and all(scored) else []
    if any(scored) and not all(scored):
        notes.append("DCASE official score not compared: not every paired run was scored with evaluation.protocol=dcase "
                     "(python -m hdmap_train.evaluate run=<run> from_predictions=true evaluation.protocol=dcase adds it)")
    return [{**names, **row, **test} for row in rows], [{**names, **row} for row in official], notes


def compare(directories: list[Path], n_resamples: int = N_RESAMPLES, seed: int = SEED) -> Comparison:
    """Every pair of the conditions found in the directories, compared on their paired jobs (p-values Holm-corrected
    over the condition pairs), and the conditions' ranks over their (source, seed) units; HdmapError when no pair of
    conditions has a paired job or paired jobs were tested on different images.
    """
    jobs = find_jobs(directories)
    conditions = list(dict.fromkeys(job.condition for job in jobs))
    if len(conditions) < 2:
        raise HdmapError(f"Only one condition ({conditions[0]}) in {', '.join(map(str, directories))}: compare needs two.")
    by_condition = {c: [job for job in jobs if job.condition == c] for c in conditions}
    ranking = ranks_and_tests(unit_table(domain_aurocs(jobs), conditions))
    rows, official, notes = [], [], {}
    for a, b in combinations(conditions, 2):
        found, scored, notes[(a, b)] = compare_pair(by_condition[a], by_condition[b], n_resamples, seed)
        rows += [{**row, "mean_rank_a": ranking["mean_ranks"].get(a), "mean_rank_b": ranking["mean_ranks"].get(b)}
                 for row in found]
        official += scored
    if not rows:
        raise HdmapError("No two conditions share a source domain and seed with both classes in a test set: nothing to pair. "
                         + "; ".join(note for found in notes.values() for note in found[:3]))
    tables = [with_holm(pd.DataFrame(found, columns=columns)) for found, columns in ((rows, COLUMNS), (official, OFFICIAL_COLUMNS))]
    return Comparison(conditions, tables[0], tables[1], ranking, notes, n_resamples, seed)


def with_holm(table: pd.DataFrame) -> pd.DataFrame:
    """The table with t_p_holm and wilcoxon_p_holm: each condition pair's p-values Holm-corrected over the pairs."""
    firsts = table.drop_duplicates(["condition_a", "condition_b"])
    for test in ("t", "wilcoxon"):
        adjusted = dict(zip(zip(firsts["condition_a"], firsts["condition_b"], strict=True),
                            holm(firsts[f"{test}_p"].tolist()), strict=True))
        table[f"{test}_p_holm"] = [adjusted[key] for key in zip(table["condition_a"], table["condition_b"], strict=True)]
    return table
