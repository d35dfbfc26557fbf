"""Several source domains at once: domain.source=[A, B] and domain=all train one model on the union of the sources'
training data (validation held out from each), and every domain is evaluated separately."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from hdmap_train.checks import check_config
from hdmap_train.console import data_line
from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule
from hdmap_train.data.images import read_images
from hdmap_train.data.normalization import PixelStats
from hdmap_train.errors import HdmapError
from hdmap_train.evaluate import main as evaluate_main
from hdmap_train.metrics import NO_TARGETS_NOTE, Scores
from hdmap_train.results import record_results
from hdmap_train.sweep.collect import collect
from hdmap_train.sweep.figures import heatmap_panels, transfer_panels
from hdmap_train.sweep.summary import write_summary
from hdmap_train.thresholds import choose_threshold
from hdmap_train.train import run
from helpers.config import compose_cfg
from helpers.runs import tiny_run_cfg
from helpers.sweeps import squeezed, write_job

SOURCES = ["domain_A", "domain_B"]


def test_domain_all_and_a_list_source_compose(tmp_path: Path) -> None:
    everything = OmegaConf.to_container(compose_cfg(["domain=all", "data.root=/data/x"], tmp_path), resolve=True)
    assert everything["domain"] == {"source": ["A", "B", "C", "D"], "targets": []}
    assert everything["name"] == "draem_A+B+C+D"
    pair = compose_cfg(["domain.source=[A,B]", "experiment=quickstart"], tmp_path)
    assert list(pair.domain.targets) == ["C", "D"]  # the default targets: the domains that are no source
    assert pair.name == "quickstart_draem_A+B" and pair.hydra.run.dir.endswith("_quickstart_draem_A+B")
    one = OmegaConf.to_container(compose_cfg(["domain.source=[C]"], tmp_path), resolve=True)
    assert one["name"] == "draem_C" and one["domain"]["targets"] == ["A", "B", "D"]  # a one-item list is one source


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["domain.source=[A,E]"], "domain E is not in the dataset (its domains: A, B, C, D)"),
        (["domain.source=[A,B,A]"], "domain.source=['A', 'B', 'A'] names A twice: list each source domain once"),
        (["domain.source=[A,B]", "domain.targets=[B,C]"], "domain.targets=['B', 'C'] include the source domain B"),
        (["domain.source=[]"], "domain.source=[] names no domain"),
        (["domain.source=[A,B]", "data.normalization.mode=minmax_fixed"], "Several source domains need one normalisation"),
        (["domain.source=[A,B]", "data.normalization.mode=zscore", "data.normalization.stats=per_domain"],
         "Several source domains need one normalisation"),
    ],
)
def test_source_list_errors_before_anything_runs(overrides: list[str], message: str, tmp_path: Path, tiny_dataset: Path) -> None:
    with pytest.raises(HdmapError, match="Invalid configuration") as caught:
        check_config(compose_cfg([f"data.root={tiny_dataset}", *overrides], tmp_path))
    assert message in str(caught.value)


def test_source_list_error_is_one_line_without_torch(tmp_path: Path) -> None:
    probe = ("import runpy, sys\nsys.argv = ['hdmap_train', *sys.argv[1:]]\ntry:\n    runpy.run_module('hdmap_train', "
             "run_name='__main__')\nexcept SystemExit as exc:\n    code = exc.code\nprint('HEAVY=' + ','.join(sorted(m for m in "
             "('torch', 'lightning', 'anomalib') if m in sys.modules)))\nsys.exit(code)\n")
    result = subprocess.run([sys.executable, "-c", probe, "data=synthetic", "domain.source=[A,A]", f"hydra.run.dir={tmp_path / 'run'}"],
                            cwd=tmp_path, capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "HEAVY=\n" in result.stdout, output[-2000:]
    assert sum("[ERROR]" in line for line in output.splitlines()) == 1 and "names A twice" in output
    assert not (tmp_path / "run").exists()  # a config error leaves no run folder


def test_union_training_set_and_validation_from_each_source(tiny_dataset: Path) -> None:
    dm = MultiDomainHDMAPDataModule(tiny_dataset, ["A", "B"], ["C"], (32, 96), val_fraction=0.1,
                                    normalization={"mode": "zscore"})
    dm.setup()
    assert dm.source == dm.category == "domain_A+domain_B" and dm.domains == [*SOURCES, "domain_C"]
    assert list(dm.test_data) == [*SOURCES, "domain_C"]
    assert dm.train_data.samples.domain.value_counts().to_dict() == {"domain_A": 36, "domain_B": 36}
    assert dm.val_data.samples.domain.value_counts().to_dict() == {"domain_A": 4, "domain_B": 4}  # 10 % of each source
    alone = MultiDomainHDMAPDataModule(tiny_dataset, "A", ["C"], (32, 96), val_fraction=0.1)
    alone.setup()
    # a source holds out the same images whichever other sources it is trained with
    assert set(alone.val_data.samples.image_path) < set(dm.val_data.samples.image_path)
    summary = dm.summary()
    assert summary["sources"] == SOURCES and summary["validation_split"].startswith("stratified")
    assert summary["train_samples_by_source"] == {"domain_A": 36, "domain_B": 36}
    assert summary["val_samples_by_source"] == {"domain_A": 4, "domain_B": 4}
    assert (summary["train_samples"], summary["val_samples"]) == (72, 8)
    # zscore with stats: source pools both sources' training images, and every domain gets those numbers
    pooled = PixelStats.of(read_images(list(dm.train_data.samples.image_path), "train").values())
    assert summary["normalization"]["train_statistics"] == {"domain_A+domain_B": pooled.as_dict()}
    assert len({json.dumps(n) for n in summary["normalization"]["applied"].values()}) == 1
    assert "sources" not in alone.summary()  # one source: the summary of old
    assert data_line(summary).endswith("| domain_A: train 36, validation 4 | domain_B: train 36, validation 4")


def scores(domain: str, shift: float) -> Scores:
    labels = np.array([0] * 6 + [1] * 6)
    return Scores(np.linspace(0, 1, 12) + shift * labels, labels, [f"/{domain}/{i}.tiff" for i in range(12)])


def test_domain_all_has_no_targets_and_null_transfer_numbers() -> None:
    domains = ["domain_A", "domain_B", "domain_C", "domain_D"]
    tests = {d: scores(d, shift) for d, shift in zip(domains, (0.5, 0.2, 0.0, -0.3), strict=True)}
    samples = {d: pd.DataFrame({"image_path": tests[d].paths, "split": "test"}) for d in domains}
    record = {"source_domain": "+".join(domains), "source_domains": domains}
    predictions = record_results(record, choose_threshold(scores("val", 0.0), "quantile", 0.9, 3.0), tests, samples)
    assert record["source_results"]["domain"] == "+".join(domains) and record["source_results"]["n_samples"] == 48
    assert list(record["source_domain_results"]) == domains and record["target_results"] == {}
    assert record["avg_target_auroc"] is None and record["transfer_ratio"] is None
    assert record["transfer_ratio_note"] == NO_TARGETS_NOTE
    per_domain = [r["image_AUROC"] for r in record["source_domain_results"].values()]
    assert record["hmean_auroc"] == pytest.approx(len(per_domain) / sum(1 / a for a in per_domain))  # each domain, not pooled
    assert record["source_results"]["image_AUROC"] == pytest.approx(roc_auc_score(predictions["label"], predictions["anomaly_score"]))


def test_sweep_summary_of_a_multi_source_job(tmp_path: Path) -> None:
    for source in "AB":
        write_job(tmp_path, "draem", source, {"A": 0.9, "B": 0.8, "C": 0.7, "D": 0.6})
    write_job(tmp_path, "draem", "A+B", {"A+B": 0.85, "A": 0.88, "B": 0.82, "C": 0.75, "D": 0.65}, folder="domain.source=[A,B]")
    write_job(tmp_path, "draem", "A+B+C+D", {"A+B+C+D": 0.8, "A": 0.9, "B": 0.8, "C": 0.7, "D": 0.6}, folder="domain=all")
    table = write_summary(tmp_path).set_index("job")
    pair = table.loc["domain.source=[A,B]"]
    assert pair["source"] == "A+B" and pair["source_AUROC"] == 0.85
    assert (pair["AUROC_A"], pair["AUROC_B"], pair["AUROC_C"]) == (0.88, 0.82, 0.75)
    assert pair["avg_target_auroc"] == pytest.approx(0.7)
    everything = table.loc["domain=all"]
    assert pd.isna(everything["avg_target_auroc"]) and everything["transfer_ratio_note"] == NO_TARGETS_NOTE
    long = pd.read_csv(tmp_path / "results_long.csv", keep_default_na=False)
    rows = long[(long["job"] == "domain.source=[A,B]") & (long["metric"] == "image_AUROC") & (long["subgroup"] == "")]
    assert dict(zip(rows["target"], rows["value"], strict=True)) == {"A": 0.88, "B": 0.82, "C": 0.75, "D": 0.65}
    means, *_ = transfer_panels(long)
    matrix = means["draem"]
    assert list(matrix.index) == ["A", "A+B", "A+B+C+D", "B"] and list(matrix.columns) == ["A", "B", "C", "D"]
    assert matrix.loc["A+B", "B"] == 0.82
    matrices, *_ = heatmap_panels(collect(tmp_path).table)
    assert list(matrices["A+B"].columns) == ["A", "B", "C", "D"] and matrices["A+B"].loc["draem", "A"] == 0.88
    assert (tmp_path / "transfer_matrix.png").is_file() and (tmp_path / "summary.png").is_file()
    markdown = squeezed((tmp_path / "summary.md").read_text())
    assert "| A+B | draem |" in markdown and "- (no targets)" in markdown


@pytest.mark.slow
def test_two_sources_end_to_end(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = tiny_run_cfg("draem", tiny_dataset, tmp_path, "domain.source=[A,B]", "model.max_epochs=1")
    run(cfg, tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "success", record["error"]
    assert record["source_domain"] == "domain_A+domain_B" and record["source_domains"] == SOURCES
    assert list(record["source_domain_results"]) == SOURCES and list(record["target_results"]) == ["domain_C", "domain_D"]
    assert record["data"]["train_samples_by_source"] == {"domain_A": 36, "domain_B": 36}
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert list(predictions["domain"].unique()) == [*SOURCES, "domain_C", "domain_D"]  # each image keeps its own domain
    by_domain = {**record["source_domain_results"], **record["target_results"]}
    for domain, rows in predictions.groupby("domain"):
        assert by_domain[domain]["image_AUROC"] == pytest.approx(roc_auc_score(rows["label"], rows["anomaly_score"]))
    pooled = predictions[predictions["domain"].isin(SOURCES)]
    assert record["source_results"]["domain"] == "domain_A+domain_B" and record["source_results"]["n_samples"] == 48
    assert record["source_results"]["image_AUROC"] == pytest.approx(roc_auc_score(pooled["label"], pooled["anomaly_score"]))
    threshold = record["validation"]["threshold"]
    assert all(r["threshold"] == threshold for r in [record["source_results"], *by_domain.values()])
    validation = pd.read_csv(tmp_path / "validation_scores.csv")
    assert validation["image_path"].str.contains("domain_A").sum() == validation["image_path"].str.contains("domain_B").sum() == 4
    assert record["avg_target_auroc"] == pytest.approx(np.mean([r["image_AUROC"] for r in record["target_results"].values()]))
    assert {p.name for p in (tmp_path / "plots").glob("*.png")} >= {"roc.png", "score_histograms.png"}
    assert evaluate_main([f"run={tmp_path}", "from_predictions=true", f"out={tmp_path / 'again'}"]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["source_domains"] == SOURCES and again["source_domain_results"] == record["source_domain_results"]
    assert again["source_results"] == record["source_results"] and again["target_results"] == record["target_results"]
