"""Sweep summary on hand-made job folders: condition identity, repeat statistics, the paper table (Markdown,
LaTeX), results_long.csv and the transfer matrix."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image
from scipy import stats

from hdmap_train.sweep.conditions import condition_table, interpolation_links
from hdmap_train.sweep.figures import text_colour, transfer_matrix_figure, transfer_panels
from hdmap_train.sweep.long_table import LONG_METRICS
from hdmap_train.sweep.summary import write_summary
from helpers.config import compose_cfg
from helpers.sweeps import DOMAINS, SUBGROUPS, squeezed, write_job

SEED_AUROCS = {0: 0.90, 1: 0.93, 2: 0.91}  # source AUROC of the three seeds


def aurocs(source: str, source_auroc: float) -> dict[str, float]:
    return {d: source_auroc if d == source else source_auroc - 0.1 * (1 + DOMAINS.index(d) % 2) for d in DOMAINS}


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    """`--multirun seed=0,1,2 model.module.learning_rate=1e-4,1e-3 domain=A,B` (draem), and patchcore once on A."""
    for learning_rate, offset in ((1e-4, 0.0), (1e-3, -0.05)):
        for source in "AB":
            for seed, auroc in SEED_AUROCS.items():
                write_job(tmp_path, "draem", source, aurocs(source, auroc + offset), seed=seed, learning_rate=learning_rate,
                          folder=f"domain={source},lr={learning_rate},seed={seed}")
    write_job(tmp_path, "patchcore", "A", aurocs("A", 0.95), folder="domain=A,model=patchcore")
    return tmp_path


def test_conditions_are_full_configs_not_names(seeds: Path) -> None:
    table = write_summary(seeds).set_index("job")
    assert sorted(table["condition"].unique()) == ["draem lr=0.0001", "draem lr=0.001", "patchcore"]
    assert table.loc["domain=B,lr=0.001,seed=2", "model.module.learning_rate"] == 0.001
    assert table.groupby("condition").size().to_dict() == {"draem lr=0.0001": 6, "draem lr=0.001": 6, "patchcore": 1}
    text = squeezed((seeds / "summary.md").read_text())
    assert "| condition | model | model.module.learning_rate | jobs | succeeded |" in text
    assert "| draem lr=0.001 | draem | 0.001 | 6 | 6 |" in text


def test_optuna_like_trials_with_the_same_name_stay_two_conditions(tmp_path: Path) -> None:
    for trial, learning_rate in enumerate((1.23456e-4, 1.23457e-4)):
        write_job(tmp_path, "draem", "A", aurocs("A", 0.9), learning_rate=learning_rate, folder=f"{trial}")
    table = write_summary(tmp_path)
    assert list(table["condition"]) == ["draem lr=0.000123456", "draem lr=0.000123457"]  # digits enough to tell apart
    assert "avg target AUROC" in squeezed((tmp_path / "summary.md").read_text())


def test_condition_columns_of_real_configs(tmp_path: Path) -> None:
    def resolved(*overrides: str) -> dict:
        return OmegaConf.to_container(compose_cfg(["data.root=/data/x", *overrides], tmp_path), resolve=True)

    configs = [resolved("model=draem"), resolved("model=draem", "seed=1", "domain=B", "ckpt_path=/x.ckpt", "paths.cache_dir=/c"),
               resolved("model=draem", "model.module.learning_rate=0.001"), resolved("model=draem", "model.max_epochs=7"),
               resolved("model=patchcore"), resolved("model=patchcore", "domain=C")]
    models = [c["model"]["name"] for c in configs]
    links = interpolation_links(OmegaConf.to_container(compose_cfg(["model=patchcore"], tmp_path), resolve=False))
    assert links["trainer.max_epochs"] == "model.max_epochs" and links["model.pretrained_backbone"] == "model.module.backbone"
    conditions = condition_table(models, configs, links)
    assert list(conditions.columns) == ["condition", "model.max_epochs", "model.module.learning_rate"]  # not trainer.max_epochs
    assert list(conditions["condition"]) == [
        "draem max_epochs=50 lr=0.0001", "draem max_epochs=50 lr=0.0001", "draem max_epochs=50 lr=0.001",
        "draem max_epochs=7 lr=0.0001", "patchcore", "patchcore",
    ]
    unknown = condition_table(models, [configs[0], None, *configs[2:]], links)  # e.g. a job without a readable record
    assert unknown["condition"].iloc[1] == "draem" and pd.isna(unknown["model.max_epochs"].iloc[1])
    assert condition_table(["draem", "draem"], [None, None], {})["condition"].tolist() == ["draem", "draem"]


def test_repeat_statistics_match_numpy_and_scipy(seeds: Path) -> None:
    write_summary(seeds)
    summary = pd.read_csv(seeds / "summary_stats.csv", keep_default_na=False, na_values=[""])
    row = summary[(summary["condition"] == "draem lr=0.0001") & (summary["source"] == "A") & (summary["target"] == "A")
                  & (summary["subgroup"].isna()) & (summary["metric"] == "image_AUROC")].iloc[0]
    values = np.array(list(SEED_AUROCS.values()))
    half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / np.sqrt(3)
    assert row["mean"] == pytest.approx(values.mean()) and row["std"] == pytest.approx(values.std(ddof=1)) and row["n"] == 3
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((values.mean() - half, values.mean() + half))
    cold = summary[(summary["condition"] == "draem lr=0.0001") & (summary["source"] == "A") & (summary["target"] == "B")
                   & (summary["subgroup"] == "cold") & (summary["metric"] == "TPR_at_FPR_5pct")].iloc[0]
    assert cold["mean"] == pytest.approx((values - 0.2 - 0.2 - 0.02).mean())
    single = summary[(summary["condition"] == "patchcore") & (summary["metric"] == "image_AUROC")].iloc[0]
    assert single["n"] == 1 and np.isnan(single["std"]) and np.isnan(single["ci_low"])
    hmean = summary[(summary["condition"] == "draem lr=0.0001") & (summary["source"] == "A") & (summary["metric"] == "hmean_auroc")]
    assert hmean["mean"].iloc[0] == pytest.approx(np.mean([stats.hmean(list(aurocs("A", a).values())) for a in values]))
    text = squeezed((seeds / "summary.md").read_text())
    assert f"| draem lr=0.0001 | A | A | (all) | {values.mean():.3f} ± {values.std(ddof=1):.3f} (n=3 of 3) |" in text
    assert "| patchcore | A | A | (all) | 0.950 (n=1 of 1) |" in text


def test_paper_table_bolds_the_best_of_each_column(seeds: Path) -> None:
    write_summary(seeds)
    latex = (seeds / "summary.tex").read_text()
    assert latex.count(r"\toprule") == latex.count(r"\bottomrule") == 1 and r"\multicolumn{2}{c}{Avg.}" in latex
    assert "\nSource & Condition & Subgroup & n & " + " & ".join(rf"\multicolumn{{2}}{{c}}{{{d}}}" for d in [*DOMAINS, "Avg."]) + r" \\" in latex
    assert "\n" + " ".join(rf"\cmidrule(lr){{{5 + 2 * i}-{6 + 2 * i}}}" for i in range(5)) + " " in latex  # under each domain
    assert latex.count(r"\midrule") == 2 and "\n\\midrule\nA & draem lr=0.0001 & all & " in latex  # header | A | B
    lines = {tuple(line.split(" & ")[1:3]): line for line in latex.splitlines() if line.startswith(("A & ", " & "))}
    assert lines["draem lr=0.0001", "all"].startswith(r"A & draem lr=0.0001 & all & 3 of 3 & 86.3 $\pm$ 1.5 & 0.913 $\pm$ 0.015 & ")
    assert lines["patchcore", "all"].startswith(r" & patchcore & all & 1 of 1 & \textbf{90.0} & \textbf{0.950} & ")  # one job: no std
    assert lines["patchcore", "all"].count(r"\textbf") == 10 and r"\textbf" not in lines["draem lr=0.0001", "all"]  # 5 columns x 2
    source_b = [line for line in latex.splitlines() if line.startswith(r"\midrule B & ")]  # a rule between source domains
    assert source_b[0].startswith(r"\midrule B & draem lr=0.0001 & all & 3 of 3 & \textbf{76.3 $\pm$ 1.5} & \textbf{0.813 $\pm$ 0.015} & \textbf{86.3")
    assert "| A | patchcore | all | 1 of 1 | **90.0** | **0.950** |" in squeezed((seeds / "summary.md").read_text())


def test_paper_table_shows_each_subgroup_under_its_condition(seeds: Path) -> None:
    write_summary(seeds)
    latex = (seeds / "summary.tex").read_text()
    source_a = latex.split(r"\midrule B & ")[0].splitlines()
    lines = {tuple(line.split(" & ")[1:3]): line for line in source_a if line.startswith(("A & ", " & "))}
    cold, warm = (0.90 + 0.93 + 0.91) / 3 - 0.02, (0.90 + 0.93 + 0.91) / 3 + 0.02  # helpers.sweeps: subgroups at AUROC -/+ 0.02
    assert lines["draem lr=0.0001", "cold"].startswith(rf" & draem lr=0.0001 & cold & 3 of 3 & 84.3 $\pm$ 1.5 & {cold:.3f} $\pm$ 0.015 & ")
    assert lines["draem lr=0.0001", "warm"].split(" & ")[5] == rf"{warm:.3f} $\pm$ 0.015"
    assert r"\textbf" not in lines["patchcore", "warm"]  # the best of a column is chosen among whole domains only
    assert "Subgroup: the whole domain (all) and its subgroups" in latex
    text = squeezed((seeds / "summary.md").read_text())
    assert "| A | patchcore | warm | 1 of 1 | 92.0 | 0.970 |" in text and text.index("| A | patchcore | all |") < text.index("| A | patchcore | cold |")
    summary = pd.read_csv(seeds / "summary_stats.csv", keep_default_na=False)  # the Avg. column of a subgroup
    average = summary[(summary["condition"] == "patchcore") & (summary["target"] == "average") & (summary["subgroup"] == "cold")
                      & (summary["metric"] == "image_AUROC")]
    assert average["mean"].iloc[0] == pytest.approx(np.mean([0.95, 0.75, 0.85, 0.75]) - 0.02)


def test_paper_table_without_subgroups_has_no_subgroup_column(tmp_path: Path) -> None:
    job = write_job(tmp_path, "draem", "A", aurocs("A", 0.9))
    record = json.loads((job / "metrics.json").read_text())
    for found in [record["source_results"], *record["target_results"].values()]:
        found.pop("subgroups")
    (job / "metrics.json").write_text(json.dumps(record))
    write_summary(tmp_path)
    assert "\nSource & Condition & n & " in (tmp_path / "summary.tex").read_text()
    assert "| A | draem | 1 of 1 | 85.0 | 0.900 |" in squeezed((tmp_path / "summary.md").read_text())


def test_results_long_has_one_row_per_job_domain_subgroup_metric(seeds: Path) -> None:
    write_job(seeds, "draem", "C", None, error="RuntimeError: boom", folder="failed")  # no results: no rows
    write_summary(seeds)
    long = pd.read_csv(seeds / "results_long.csv", keep_default_na=False)
    assert len(long) == 13 * len(DOMAINS) * (1 + len(SUBGROUPS)) * len(LONG_METRICS)
    assert list(long.columns[:10]) == ["job", "condition", "model.module.learning_rate", "model", "source", "target", "subgroup",
                                       "seed", "metric", "value"]
    assert {"commit", "device", "dataset_sha256", "version.torch", "version.anomalib"} <= set(long.columns)
    row = long[(long["job"] == "domain=B,lr=0.001,seed=1") & (long["target"] == "D") & (long["subgroup"] == "warm")
               & (long["metric"] == "image_accuracy")].iloc[0]
    assert float(row["value"]) == pytest.approx(SEED_AUROCS[1] - 0.05 - 0.2 - 0.05 + 0.02)
    assert row["device"] == "cpu" and row["dataset_sha256"] == "ab" * 32 and row["version.torch"] == "2.5.1"
    assert len(row["commit"]) in (0, 40) and row["seed"] == 1


def test_transfer_ratio_at_chance_is_null_with_a_note(tmp_path: Path) -> None:
    write_job(tmp_path, "draem", "A", {"A": 0.42, "B": 0.6, "C": 0.7, "D": 0.8})
    table = write_summary(tmp_path)
    assert pd.isna(table.loc[0, "transfer_ratio"]) and table.loc[0, "avg_target_auroc"] == pytest.approx(0.7)
    assert table.loc[0, "transfer_ratio_note"] == "source AUROC 0.42 is at or below chance: a ratio would be meaningless"
    assert "| - (source AUROC ≤ 0.5) |" in squeezed((tmp_path / "summary.md").read_text())
    assert not (tmp_path / "transfer_matrix.png").exists()  # one source domain: no transfer matrix
    assert r"A & draem & all & 1 of 1 & 37.0 & 0.420 & " in (tmp_path / "summary.tex").read_text()  # one condition: nothing bold


def test_transfer_matrix_png(seeds: Path) -> None:
    write_summary(seeds)
    long = pd.read_csv(seeds / "results_long.csv", keep_default_na=False)
    means, counts, spreads = transfer_panels(long)
    assert list(means) == ["draem lr=0.0001", "draem lr=0.001", "patchcore"]
    assert means["draem lr=0.0001"].loc["A", "A"] == pytest.approx(np.mean(list(SEED_AUROCS.values())))
    assert counts["draem lr=0.0001"].loc["B", "C"] == 3 and counts["patchcore"].loc["B", "A"] == 0
    assert spreads["draem lr=0.0001"].loc["A", "A"] == pytest.approx(np.std(list(SEED_AUROCS.values()), ddof=1))
    figure = transfer_matrix_figure(means, counts, spreads)
    panels = [axes for axes in figure.axes if axes.get_title()]
    assert [axes.get_title() for axes in panels] == list(means)
    assert {text.get_text().split("\n")[-1] for text in panels[0].texts} == {"n=3"}
    spread = f"±{np.std(list(SEED_AUROCS.values()), ddof=1):.3f}"
    assert spread in [text.get_text().split("\n")[1] for text in panels[0].texts if text.get_position() == (0, 0)]
    assert len(panels[0].patches) == 3  # the diagonal cells of sources A and B, the avg target column
    assert panels[0].get_xticklabels()[-1].get_text() == "avg\ntarget"
    row_a = means["draem lr=0.0001"].loc["A"]
    expected = f"{row_a.drop('A').mean():.3f}"  # the average over A's targets, in the last cell of row A
    assert expected in [text.get_text().split("\n")[0] for text in panels[0].texts if text.get_position() == (len(row_a), 0)]
    assert figure.get_suptitle().startswith("Transfer matrix: image AUROC, trained on (rows) x evaluated on (columns)")
    with Image.open(seeds / "transfer_matrix.png") as image:
        assert image.format == "PNG" and image.size[0] > image.size[1]


def test_transfer_matrix_text_reads_on_every_colour() -> None:
    values = pd.DataFrame([[0.05, 0.5], [0.75, 1.0]], index=["A", "B"], columns=["A", "B"])
    figure = transfer_matrix_figure({"x": values}, {"x": pd.DataFrame(1, index=values.index, columns=values.columns)})
    image = figure.axes[0].get_images()[0]
    for text in figure.axes[0].texts:
        value = float(text.get_text().split("\n")[0])
        assert text.get_color() == text_colour(image.cmap(image.norm(value)))
    assert (image.norm.vmin, image.norm.vmax) == (0.0, 1.0)
    assert [text.get_color() for text in figure.axes[0].texts] == ["white", "black", "black", "black", "white", "black"]  # avg target last


def test_a_key_the_model_ignores_does_not_split_conditions(tmp_path: Path) -> None:
    """PatchCore trains one epoch whatever model.max_epochs says: max_epochs=2 and 5 are one condition."""
    for seed, configured in ((0, 2), (1, 5)):
        job = write_job(tmp_path, "patchcore", "A", {"A": 0.9, "B": 0.8}, seed=seed, folder=f"seed={seed}")
        record = json.loads((job / "metrics.json").read_text())
        record["condition"]["config"]["model"]["max_epochs"] = record["condition"]["config"]["trainer"]["max_epochs"] = configured
        record["training_info"] |= {"max_epochs_configured": configured, "max_epochs_effective": 1}
        (job / "metrics.json").write_text(json.dumps(record))
    draem = write_job(tmp_path, "draem", "A", {"A": 0.9, "B": 0.8}, folder="draem")
    record = json.loads((draem / "metrics.json").read_text())
    record["training_info"] |= {"max_epochs_configured": 5, "max_epochs_effective": 5}
    (draem / "metrics.json").write_text(json.dumps(record))
    table = write_summary(tmp_path)
    assert sorted(table["condition"]) == ["draem", "patchcore", "patchcore"]


def test_paper_table_escapes_latex_and_marks_missing_cells(tmp_path: Path) -> None:
    write_job(tmp_path, "draem_v2", "A", aurocs("A", 0.9), folder="one")
    write_job(tmp_path, "50%&#{x}$~", "A", {"A": 0.8, "B": 0.7}, folder="two")  # evaluated on B only: no C, D
    write_summary(tmp_path)
    latex = (tmp_path / "summary.tex").read_text()
    assert "\nA & 50\\%\\&\\#\\{x\\}\\$\\textasciitilde  & all & 1 of 1 & 75.0 & 0.800 & \\textbf{65.0} & \\textbf{0.700} & -- & -- & -- & -- & " in latex
    assert "\n & draem\\_v2 & all & 1 of 1 & \\textbf{85.0} & \\textbf{0.900} & \\textbf{65.0} & \\textbf{0.700} & " in latex  # a tie: both bold
    markdown = squeezed((tmp_path / "summary.md").read_text())
    assert "| A | 50%&#{x}$~ | all | 1 of 1 | 75.0 | 0.800 | **65.0** | **0.700** | - | - | - | - | 70.0 | 0.750 |" in markdown


def test_every_mean_says_n_of_n_and_names_the_failed_and_below_chance_seeds(tmp_path: Path) -> None:
    write_job(tmp_path, "draem", "A", None, error="HdmapError: training diverged at epoch 1 (loss nan): lower the learning "
              "rate", seed=0, folder="seed=0")
    write_job(tmp_path, "draem", "A", aurocs("A", 0.45), seed=1, folder="seed=1")  # a collapsed run: kept, and said
    write_job(tmp_path, "draem", "A", aurocs("A", 0.99), seed=2, folder="seed=2")
    write_summary(tmp_path)
    summary = pd.read_csv(tmp_path / "summary_stats.csv", keep_default_na=False, na_values=[""])
    source = summary[(summary["target"] == "A") & summary["subgroup"].isna() & (summary["metric"] == "image_AUROC")].iloc[0]
    assert (source["n"], source["n_total"]) == (2, 3) and source["mean"] == pytest.approx((0.45 + 0.99) / 2)
    assert source["note"] == "seed 0 diverged; seed 1 below chance (source AUROC 0.450)"
    half = stats.t.ppf(0.975, 1) * np.std([0.45, 0.99], ddof=1) / np.sqrt(2)  # a t-interval far wider than [0, 1]
    assert source["mean"] + half > 1 and source["mean"] - half < 0
    assert (source["ci_low"], source["ci_high"]) == (0.0, 1.0) and source["ci_method"] == "t clipped to [0, 1]"
    ratio = summary[summary["metric"] == "transfer_ratio"].iloc[0]
    assert ratio["n"] == 1 and ratio["n_total"] == 3 and ratio["ci_method"] == "t clipped to [0, ∞)"  # no ratio below chance
    text = squeezed((tmp_path / "summary.md").read_text())
    assert "(n=2 of 3)" in text and "(n=1 of 3)" in text and "| seed 0 diverged; seed 1 below chance (source AUROC 0.450) |" in text
    assert "| A | draem | all | 2 of 3 |" in text  # the paper table's n column
