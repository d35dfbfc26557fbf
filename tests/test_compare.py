"""`python -m hdmap_train.compare`: paired bootstrap of AUROC differences, Wilcoxon test, mean ranks, refusals."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from hdmap_train.compare import main
from hdmap_train.sweep.bootstrap import paired_difference, resampled_auroc
from helpers.sweeps import DOMAINS, squeezed, write_job


def write_predictions(job: Path, shift: float, seed: int, n: int = 15, rename: str | None = None) -> None:
    """predictions.csv of n normal and n fault images per domain; fault scores are `shift` higher on average."""
    rng = np.random.default_rng(seed)
    frames = []
    for domain in DOMAINS:
        labels = np.repeat([0, 1], n)
        names = [f"{i:03d}.tiff" for i in range(n)] * 2
        if rename and domain == "B":
            names[0] = rename
        paths = [f"/data/domain_{domain}/test/{'fault' if label else 'good'}/{name}" for label, name in zip(labels, names, strict=True)]
        scores = rng.normal(size=2 * n) + shift * labels
        frames.append(pd.DataFrame({"domain": f"domain_{domain}", "split": "test", "image_path": paths, "label": labels,
                                    "anomaly_score": scores, "predicted_label": (scores > 1).astype(int), "subgroup": ""}))
    pd.concat(frames).to_csv(job / "predictions.csv", index=False)


def write_sweep(sweep: Path, model: str, shift: float, seeds=(0, 1, 2), **job) -> list[Path]:
    """A sweep of one condition on source A, one job per seed, each with predictions.csv."""
    jobs = []
    for seed in seeds:
        folder = write_job(sweep, model, "A", dict.fromkeys(DOMAINS, 0.8), seed=seed, folder=f"model={model},seed={seed}", **job)
        write_predictions(folder, shift, seed=seed + 100 * len(model))
        jobs.append(folder)
    return jobs


def expected_interval(labels: np.ndarray, a: np.ndarray, b: np.ndarray, n_resamples: int, seed: int) -> tuple[float, float]:
    """The worked example: draw normals then faults with replacement per resample; sklearn AUROC of each; percentiles."""
    rng = np.random.default_rng(seed)
    normal, fault = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    draws = np.concatenate([normal[rng.integers(0, normal.size, (n_resamples, normal.size))],
                            fault[rng.integers(0, fault.size, (n_resamples, fault.size))]], axis=1)
    differences = [np.mean([roc_auc_score(labels[d], x[d]) - roc_auc_score(labels[d], y[d]) for x, y in zip(a, b, strict=True)])
                   for d in draws]
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(low), float(high)


def test_bootstrap_matches_a_worked_example() -> None:
    rng = np.random.default_rng(7)
    labels = np.array([0, 1, 0, 0, 1, 1, 0, 1, 0, 1, 1])
    a = np.round(rng.normal(size=(2, labels.size)) + labels, 1)  # two seeds; rounded, so there are ties
    b = np.round(rng.normal(size=(2, labels.size)) + 0.5 * labels, 1)
    result = paired_difference(labels, a, b, n_resamples=300, seed=5)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx(expected_interval(labels, a, b, 300, 5), abs=1e-12)
    aurocs = [[roc_auc_score(labels, s) for s in scores] for scores in (a, b)]
    assert result["difference"] == pytest.approx(np.mean(aurocs[0]) - np.mean(aurocs[1]))
    assert result["n_seeds"] == 2 and result["auroc_a"] == pytest.approx(np.mean(aurocs[0]))
    draws = np.random.default_rng(1).integers(0, labels.size, (50, labels.size))
    draws = draws[[np.unique(labels[d]).size == 2 for d in draws]]
    assert resampled_auroc(a[0], labels, draws) == pytest.approx([roc_auc_score(labels[d], a[0][d]) for d in draws])


def test_bootstrap_interval_contains_the_true_difference() -> None:
    rng = np.random.default_rng(0)
    n = 400
    labels = np.repeat([0, 1], n)
    a = rng.normal(size=2 * n) + 2.0 * labels  # true AUROC Phi(2 / sqrt 2)
    b = a - 1.0 * labels + rng.normal(scale=0.3, size=2 * n) * labels  # faults 1 lower, a little noisier
    true = stats.norm.cdf(2 / np.sqrt(2)) - stats.norm.cdf(1 / np.sqrt(2 + 0.09))
    result = paired_difference(labels, a[None], b[None], n_resamples=2000, seed=0)
    assert result["ci_low"] < true < result["ci_high"]
    assert result["ci_low"] < result["difference"] < result["ci_high"] and result["ci_high"] - result["ci_low"] < 0.08


def test_two_sweep_directories_compare_at_the_unit_that_was_repeated(tmp_path: Path, capsys) -> None:
    today = write_sweep(tmp_path / "today", "draem", shift=2.0)
    last_week = write_sweep(tmp_path / "last_week", "patchcore", shift=0.5)
    assert main([f"dir={tmp_path / 'today'}", f"dir={tmp_path / 'last_week'}", f"out={tmp_path / 'cmp'}", "resamples=200"]) == 0
    printed = capsys.readouterr().out
    assert printed == (tmp_path / "cmp" / "comparison.md").read_text()
    assert "## a = draem, b = patchcore" in printed and "Over 3 (source, seed) units: paired t-test" in printed
    assert "seed 95% CI" in printed and "image 95% CI" in printed and "not independent repeats" in printed
    rows = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert list(rows["domain"]) == DOMAINS and (rows["n_seeds"] == 3).all() and (rows["n_resamples"] == 200).all()

    def aurocs(jobs: list[Path]) -> np.ndarray:  # seeds x domains
        frames = [pd.read_csv(job / "predictions.csv") for job in jobs]
        return np.array([[roc_auc_score(f.label[f.domain == f"domain_{d}"], f.anomaly_score[f.domain == f"domain_{d}"])
                          for d in DOMAINS] for f in frames])

    a, b = aurocs(today), aurocs(last_week)
    units_a, units_b = a.mean(axis=1), b.mean(axis=1)  # one value per training run, not per domain
    t, w = stats.ttest_rel(units_a, units_b), stats.wilcoxon(units_a, units_b)
    assert (rows["units"] == 3).all() and (rows["wilcoxon_n"] == 3).all()
    assert rows["t_p"].iloc[0] == pytest.approx(t.pvalue) and rows["t_statistic"].iloc[0] == pytest.approx(t.statistic)
    assert rows["wilcoxon_p"].iloc[0] == pytest.approx(w.pvalue) == 0.25  # the smallest p three units can give
    assert rows["t_p_holm"].iloc[0] == pytest.approx(t.pvalue)  # one pair: nothing to correct
    assert rows["difference"].to_numpy() == pytest.approx((a - b).mean(axis=0))
    half = stats.t.ppf(0.975, 2) * (a - b).std(axis=0, ddof=1) / np.sqrt(3)
    assert rows["seed_ci_low"].to_numpy() == pytest.approx((a - b).mean(axis=0) - half)
    assert rows["seed_ci_high"].to_numpy() == pytest.approx((a - b).mean(axis=0) + half)
    assert (rows["ci_low"] <= rows["difference"]).all() and (rows["difference"] <= rows["ci_high"]).all()
    assert (rows["mean_rank_a"] == 1.0).all() and (rows["mean_rank_b"] == 2.0).all()  # draem is better in every run
    assert (tmp_path / "cmp" / "critical_difference.png").stat().st_size > 1000


def test_three_conditions_holm_correction_friedman_and_critical_difference(tmp_path: Path, capsys) -> None:
    for model, shift in (("draem", 2.0), ("patchcore", 0.5), ("padim", 1.0)):
        write_sweep(tmp_path / model, model, shift=shift, seeds=(0, 1, 2, 3, 4))
    assert main([*(f"dir={tmp_path / m}" for m in ("draem", "patchcore", "padim")), f"out={tmp_path / 'cmp'}", "resamples=20"]) == 0
    printed = capsys.readouterr().out
    rows = pd.read_csv(tmp_path / "cmp" / "comparison.csv").drop_duplicates(["condition_a", "condition_b"])
    assert len(rows) == 3 and (rows["units"] == 5).all()
    order = np.argsort(rows["t_p"].to_numpy())  # Holm: the k-th smallest p times (3 - k), kept monotone, capped at 1
    expected = np.minimum(1, np.maximum.accumulate(rows["t_p"].to_numpy()[order] * np.array([3, 2, 1])))
    assert rows["t_p_holm"].to_numpy()[order] == pytest.approx(expected)
    assert (rows["wilcoxon_p_holm"] >= rows["wilcoxon_p"]).all() and "(Holm " in printed
    assert "Friedman test over the units: χ² = " in printed and "Nemenyi post-hoc p-values" in printed
    assert (tmp_path / "cmp" / "critical_difference.png").is_file()


def test_the_same_condition_in_two_sweeps_is_told_apart_and_unpaired_seeds_are_noted(tmp_path: Path, capsys) -> None:
    write_sweep(tmp_path / "new", "draem", shift=1.5)
    write_sweep(tmp_path / "old", "draem", shift=1.0, seeds=(0, 1, 7))
    assert main([f"dir={tmp_path / 'new'}", f"dir={tmp_path / 'old'}", "resamples=50"]) == 0
    printed = squeezed(capsys.readouterr().out)
    assert f"## a = draem [{tmp_path / 'new'}], b = draem [{tmp_path / 'old'}]" in printed
    assert "| A | B | 2 |" in printed and "no partner (same source and seed)" in printed and "seed 7" in printed


def test_run_directories_with_equals_and_commas_in_their_paths(tmp_path: Path, capsys) -> None:
    draem = write_sweep(tmp_path / "grid=a,b", "draem", shift=2.0, seeds=(0,))[0]        # .../model=draem,seed=0
    patchcore = write_sweep(tmp_path / "grid=a,b", "patchcore", shift=0.5, seeds=(0,))[0]
    assert main([f"dir={draem}", f"dir={patchcore}", "resamples=20", "seed=3"]) == 0
    printed = squeezed(capsys.readouterr().out)
    assert "## a = draem, b = patchcore" in printed and "| A | B | 1 |" in printed


@pytest.mark.parametrize(("change", "message"), [
    ("rename", "domain_B test images differ (1 only in the first, 1 only in the second, e.g. 000.tiff label 0)"),
    ("manifest", "their datasets differ (manifest sha256 abababababab vs cdcdcdcdcdcd)"),
])
def test_refuses_runs_tested_on_different_images(tmp_path: Path, capsys, change: str, message: str) -> None:
    write_sweep(tmp_path / "a", "draem", shift=1.0, seeds=(0,))
    other = write_sweep(tmp_path / "b", "patchcore", shift=1.0, seeds=(0,),
                        manifest_sha256="cd" * 32 if change == "manifest" else "ab" * 32)[0]
    if change == "rename":
        write_predictions(other, 1.0, seed=0, rename="999.tiff")
    assert main([f"dir={tmp_path / 'a'}", f"dir={tmp_path / 'b'}"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: Cannot pair ") and message in error and len(error.strip().splitlines()) == 1


def test_usage_errors_exit_2_and_bad_values_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([]) == 2 and "error: dir= is required" in capsys.readouterr().err
    assert main([f"dir={tmp_path / 'nowhere'}"]) == 1 and "not a directory" in capsys.readouterr().err
    assert main([f"dir={tmp_path}", "resamples=0"]) == 1 and "resamples=0 must be at least 1" in capsys.readouterr().err


def fingerprint_jobs(jobs: list[Path], prints: dict[str, str]) -> None:
    for job in jobs:
        record = json.loads((job / "metrics.json").read_text())
        record["data"]["test_fingerprints"] = prints
        (job / "metrics.json").write_text(json.dumps(record))


def test_same_file_names_with_other_content_are_refused(tmp_path: Path, capsys) -> None:
    same = {f"domain_{d}": "ab" * 32 for d in DOMAINS}
    fingerprint_jobs(write_sweep(tmp_path / "a", "draem", shift=1.0), same)
    fingerprint_jobs(write_sweep(tmp_path / "b", "patchcore", shift=1.5), {**same, "domain_C": "cd" * 32})
    assert main([f"dir={tmp_path / 'a'}", f"dir={tmp_path / 'b'}", "resamples=20"]) == 1
    error = capsys.readouterr().err
    assert "their domain_C test sets differ in content (fingerprints abababababab vs cdcdcdcdcdcd" in error
    fingerprint_jobs(write_sweep(tmp_path / "c", "patchcore", shift=1.5), same)
    assert main([f"dir={tmp_path / 'a'}", f"dir={tmp_path / 'c'}", "resamples=20"]) == 0


def test_a_test_fingerprint_is_of_paths_labels_and_bytes_not_of_the_root(tmp_path: Path) -> None:
    from hdmap_train.data.summary import test_fingerprint

    def dataset(root: Path, content: bytes) -> pd.DataFrame:
        paths = []
        for label, name in ((0, "good/000.tiff"), (1, "fault/000.tiff")):
            path = root / "domain_A" / "test" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content + bytes([label]))
            paths.append(str(path))
        return pd.DataFrame({"image_path": paths, "label_index": [0, 1]})

    first = test_fingerprint(dataset(tmp_path / "one", b"x"), tmp_path / "one")
    assert test_fingerprint(dataset(tmp_path / "two", b"x"), tmp_path / "two") == first  # a copy elsewhere
    assert test_fingerprint(dataset(tmp_path / "three", b"y"), tmp_path / "three") != first  # same names, other bytes
    relabelled = dataset(tmp_path / "four", b"x").assign(label_index=[1, 0])
    assert test_fingerprint(relabelled, tmp_path / "four") != first


def score_with_dcase(jobs: list[Path]) -> None:
    """Mark the runs as scored with evaluation.protocol=dcase (compare recomputes the score from predictions.csv)."""
    for job in jobs:
        record = json.loads((job / "metrics.json").read_text())
        record["dcase"] = {"official_score": 0.0}
        (job / "metrics.json").write_text(json.dumps(record))


def dcase_official(job: Path) -> float:
    """The official score by its definition: hmean of AUC(domain normals + all anomalies) per domain and the pooled pAUC."""
    frame = pd.read_csv(job / "predictions.csv")
    anomalous = frame["label"] == 1
    aucs = [roc_auc_score(frame.label[(frame.domain == d) | anomalous], frame.anomaly_score[(frame.domain == d) | anomalous])
            for d in frame["domain"].unique()]
    pauc = roc_auc_score(frame["label"], frame["anomaly_score"], max_fpr=0.1)
    return len(aucs + [pauc]) / sum(1 / v for v in [*aucs, pauc])


def test_dcase_official_score_is_compared_over_the_units(tmp_path: Path, capsys) -> None:
    draem = write_sweep(tmp_path / "a", "draem", shift=2.0)
    patchcore = write_sweep(tmp_path / "b", "patchcore", shift=0.7)
    score_with_dcase(draem)
    assert main([f"dir={tmp_path / 'a'}", f"dir={tmp_path / 'b'}", "resamples=20", f"out={tmp_path / 'cmp'}"]) == 0
    printed = capsys.readouterr().out
    assert "## DCASE official score" not in printed and "not every paired run was scored with evaluation.protocol=dcase" in printed
    assert not (tmp_path / "cmp" / "official_score.csv").exists()
    score_with_dcase(patchcore)
    assert main([f"dir={tmp_path / 'a'}", f"dir={tmp_path / 'b'}", "resamples=20", f"out={tmp_path / 'cmp'}"]) == 0
    printed = squeezed(capsys.readouterr().out)
    official = pd.read_csv(tmp_path / "cmp" / "official_score.csv")
    a, b = np.array([dcase_official(job) for job in draem]), np.array([dcase_official(job) for job in patchcore])
    assert len(official) == 1 and official.loc[0, "n_seeds"] == 3 and official.loc[0, "units"] == 3
    assert official.loc[0, "official_a"] == pytest.approx(a.mean()) and official.loc[0, "difference"] == pytest.approx((a - b).mean())
    half = stats.t.ppf(0.975, 2) * (a - b).std(ddof=1) / np.sqrt(3)
    assert official.loc[0, "seed_ci_low"] == pytest.approx((a - b).mean() - half)
    assert official.loc[0, "t_p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert "## DCASE official score (evaluation.protocol=dcase)" in printed
    assert f"| draem | patchcore | A | 3 | {a.mean():.3f} | {b.mean():.3f} | {(a - b).mean():+.3f} |" in printed


@pytest.mark.slow
def test_real_runs_on_two_datasets_with_the_same_file_names_are_refused(tmp_path: Path, tiny_dataset: Path, capsys) -> None:
    from hdmap_train.data.synthetic import SyntheticSpec, ensure_dataset
    from hdmap_train.train import run
    from helpers.config import TINY_SPEC
    from helpers.runs import tiny_run_cfg

    first = Path(shutil.copytree(tiny_dataset, tmp_path / "first"))
    other = ensure_dataset(SyntheticSpec(n_train=TINY_SPEC.n_train, n_test=TINY_SPEC.n_test, seed=1), tmp_path / "other")
    for root in (first, other):  # the original system's layout: no manifest
        (root / "manifest.json").unlink()
    names = [sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) for root in (first, other)]
    assert names[0] == names[1]  # the same files and labels by name; other bytes
    for model, root in (("padim", first), ("patchcore", other)):
        run(tiny_run_cfg(model, root, tmp_path / model, "weights=random", "domain.targets=[B]"), tmp_path / model)
    assert main([f"dir={tmp_path / 'padim'}", f"dir={tmp_path / 'patchcore'}", "resamples=20"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: Cannot pair ") and "test sets differ in content" in error and len(error.strip().splitlines()) == 1
