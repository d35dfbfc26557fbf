"""Sweep summary files from job folders (success, failed, missing, unreadable), override columns, the report CLI
and the Hydra callback."""

from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image

from hdmap_train.hydra_callbacks import SweepSummary
from hdmap_train.report import main as report_main
from hdmap_train.sweep.summary import write_summary
from helpers.sweeps import squeezed, write_job


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    write_job(tmp_path, "draem", "A", {"A": 1.0, "B": 0.8, "C": 0.7, "D": 0.6})
    write_job(tmp_path, "draem", "B", {"A": 0.9, "B": 0.95, "C": 0.85, "D": 0.8})
    write_job(tmp_path, "patchcore", "A", None, error="MissingWeightsError: resnet18 is not in the cache\nTraceback ...")
    write_job(tmp_path, "patchcore", "B", None)  # still running: no metrics.json yet
    return tmp_path


def test_summary_csv_one_row_per_job(sweep: Path) -> None:
    write_summary(sweep)
    table = pd.read_csv(sweep / "summary.csv")
    assert list(table["job"]) == ["domain=A,model=draem", "domain=A,model=patchcore", "domain=B,model=draem", "domain=B,model=patchcore"]
    assert list(table["status"]) == ["success", "failed", "success", "missing"]
    assert list(table.columns[:8]) == ["job", "condition", "model", "source", "seed", "status", "source_AUROC", "source_F1"]
    assert list(table.columns[8:16]) == ["AUROC_A", "F1_A", "AUROC_B", "F1_B", "AUROC_C", "F1_C", "AUROC_D", "F1_D"]
    assert list(table.columns[16:]) == ["avg_target_auroc", "hmean_target_auroc", "hmean_auroc", "transfer_ratio", "official_score",
                                        "transfer_ratio_note", "fit_seconds", "parameters_total", "inference_images_per_second",
                                        "peak_memory_mb", "memory_bank_mb", "inference_device", "weights", "error"]
    draem_a = table.iloc[0]
    assert draem_a["condition"] == "draem" and draem_a["source"] == "A" and pd.isna(draem_a["AUROC_A"])
    assert draem_a["source_AUROC"] == 1.0 and draem_a["AUROC_B"] == 0.8 and draem_a["F1_D"] == pytest.approx(0.5)
    assert draem_a["avg_target_auroc"] == pytest.approx(0.7) and draem_a["transfer_ratio"] == pytest.approx(0.7)
    assert draem_a["fit_seconds"] == 12.5 and draem_a["seed"] == 42
    assert draem_a["hmean_target_auroc"] == pytest.approx(3 / (1 / 0.8 + 1 / 0.7 + 1 / 0.6))
    assert draem_a["hmean_auroc"] == pytest.approx(4 / (1 / 1.0 + 1 / 0.8 + 1 / 0.7 + 1 / 0.6))
    assert table.iloc[2]["transfer_ratio"] == pytest.approx((0.9 + 0.85 + 0.8) / 3 / 0.95)
    assert table.iloc[1]["error"] == "MissingWeightsError: resnet18 is not in the cache"  # the error line only
    assert table.iloc[3]["model"] == "patchcore" and table.iloc[3]["error"] == "no metrics.json"


def test_summary_md_lists_the_grid_failures_and_missing_jobs(sweep: Path) -> None:
    write_summary(sweep)
    text = squeezed((sweep / "summary.md").read_text())
    assert "4 jobs: 2 succeeded, 1 failed, 1 missing" in text
    assert "| condition | A | B |" in text
    assert "| draem | 0.700 (1.000) | 0.850 (0.950) |" in text and "| patchcore | failed | missing |" in text
    assert "- `domain=A,model=patchcore`: MissingWeightsError: resnet18 is not in the cache" in text
    assert "- `domain=B,model=patchcore`: no metrics.json" in text


def test_summary_png_has_one_panel_per_source_domain(sweep: Path) -> None:
    write_summary(sweep)
    width, height = Image.open(sweep / "summary.png").size
    write_job(sweep / "more", "draem", "C", {"A": 0.9, "B": 0.9, "C": 0.9, "D": 0.9})
    write_summary(sweep)
    assert Image.open(sweep / "summary.png").size[0] > width  # a third source domain, a third panel


def test_report_cli_rebuilds_a_partial_sweep(sweep: Path, capsys: pytest.CaptureFixture) -> None:
    assert report_main([f"dir={sweep}"]) == 0
    out = capsys.readouterr().out
    assert "4 jobs (2 succeeded, 1 failed, 1 missing, 0 unreadable)" in out
    files = ("summary.csv", "summary_stats.csv", "results_long.csv", "summary.md", "summary.tex", "summary.png", "transfer_matrix.png")
    assert all((sweep / name).is_file() for name in files) and all(str(sweep / name) in out for name in files)


def test_report_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert report_main([f"dir={tmp_path / 'nosuch'}"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert report_main([f"dir={tmp_path}"]) == 1
    assert "holds no job folders" in capsys.readouterr().err
    assert report_main([]) == 2


def test_callback_exits_non_zero_after_writing_the_summary_when_a_job_failed(sweep: Path) -> None:
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    with pytest.raises(SystemExit) as exited:
        SweepSummary().on_multirun_end(config=config)
    assert exited.value.code == 1
    assert len(pd.read_csv(sweep / "summary.csv")) == 4


def test_callback_returns_when_every_job_succeeded(tmp_path: Path) -> None:
    write_job(tmp_path, "draem", "A", {"A": 1.0, "B": 0.8, "C": 0.7, "D": 0.6})
    SweepSummary().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert len(pd.read_csv(tmp_path / "summary.csv")) == 1


def test_unreadable_metrics_json_is_listed_not_fatal(sweep: Path, capsys: pytest.CaptureFixture) -> None:
    truncated = sweep / "domain=B,model=draem" / "metrics.json"
    truncated.write_text(truncated.read_text()[:40])  # a job killed while writing, or a disk that filled up
    not_a_record = write_job(sweep / "more", "draem", "C", {"A": 0.9, "B": 0.9, "C": 0.9, "D": 0.9}) / "metrics.json"
    not_a_record.write_text("{}")
    # Records kept aside under another name are not jobs, and not read as a job's record.
    (sweep / "aside").mkdir()
    (sweep / "aside" / "metrics.corrupt-20261201-101010.json").write_text("{")
    (sweep / "domain=B,model=patchcore" / "metrics.corrupt-20261201-101010.json").write_text("{")

    assert report_main([f"dir={sweep}"]) == 0
    assert "5 jobs (1 succeeded, 1 failed, 1 missing, 2 unreadable)" in capsys.readouterr().out
    table = pd.read_csv(sweep / "summary.csv").set_index("job")
    assert list(table.index) == ["domain=A,model=draem", "domain=A,model=patchcore", "domain=B,model=draem",
                                 "domain=B,model=patchcore", "more/domain=C,model=draem"]
    assert list(table["status"]) == ["success", "failed", "unreadable", "missing", "unreadable"]
    bad = table.loc["domain=B,model=draem"]
    assert bad["model"] == "draem" and bad["source"] == "B"  # from .hydra/config.yaml
    assert bad["error"].startswith(f"{truncated} is unreadable (JSONDecodeError: ") and "re-run the sweep" in bad["error"]
    assert table.loc["more/domain=C,model=draem", "error"].startswith(f"{not_a_record} is unreadable (ValueError: not a hdmap_train record)")
    text = squeezed((sweep / "summary.md").read_text())
    assert "5 jobs: 1 succeeded, 1 failed, 1 missing (no metrics.json), 2 unreadable (corrupt metrics.json)." in text
    assert "## Unreadable results (corrupt or truncated metrics.json)" in text
    assert f"- `domain=B,model=draem`: {truncated} is unreadable (JSONDecodeError: " in text
    assert "| draem | 0.700 (1.000) | unreadable | unreadable |" in text

    with pytest.raises(SystemExit) as exited:  # the end-of-sweep callback writes the summary, then exits 1
        SweepSummary().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert exited.value.code == 1


def test_summary_has_one_column_per_override(tmp_path: Path) -> None:
    common = ["experiment=quickstart", "model.max_epochs=1", "evaluation.plots=False", "data.root=/data/hdmap",
              "trainer.enable_progress_bar=false"]
    write_job(tmp_path, "draem", "A", {"A": 1.0, "B": 0.8, "C": 0.7, "D": 0.6}, overrides=["domain=A", "model=draem", *common])
    write_job(tmp_path, "draem", "B", {"A": 0.9, "B": 0.95, "C": 0.85, "D": 0.8},
              overrides=["domain=B", "model=draem", *common, "model.module.reconstructive_width=8"])
    write_job(tmp_path, "patchcore", "A", None)  # no .hydra/overrides.yaml (e.g. still starting)
    table = write_summary(tmp_path)
    override_columns = ["override.data.root", "override.domain", "override.experiment", "override.model",
                        "override.model.max_epochs", "override.model.module.reconstructive_width"]
    assert list(table.columns[:8]) == ["job", *override_columns, "condition"]  # result-neutral keys left out
    csv = pd.read_csv(tmp_path / "summary.csv", dtype=str).set_index("job")
    assert csv["override.domain"].tolist()[::2] == ["A", "B"] and csv.loc["domain=A,model=patchcore"].filter(like="override.").isna().all()
    assert csv.loc["domain=B,model=draem", "override.model.module.reconstructive_width"] == "8"
    assert pd.isna(csv.loc["domain=A,model=draem", "override.model.module.reconstructive_width"])
    assert csv.loc["domain=A,model=draem", "override.data.root"] == "/data/hdmap"
    text = squeezed((tmp_path / "summary.md").read_text())
    # The jobs table shows the overrides that differ between jobs; those all jobs share are listed once.
    header = "| job | condition | data.root | domain | experiment | model | model.max_epochs | model.module.reconstructive_width | status |"
    assert header in text
    assert "| `domain=B,model=draem` | draem | /data/hdmap | B | quickstart | draem | 1 | 8 | success |" in text

    other = tmp_path / "other"
    for domain in "AB":
        write_job(other, "draem", domain, {"A": 1.0, "B": 0.8, "C": 0.7, "D": 0.6}, overrides=[f"domain={domain}", *common])
    write_summary(other)
    text = squeezed((other / "summary.md").read_text())
    assert "Overrides of every job: `data.root=/data/hdmap`, `experiment=quickstart`, `model.max_epochs=1`" in text
    assert "| job | condition | domain | status |" in text


def test_report_cli_takes_repeated_dirs_with_equals_and_commas(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first, second = tmp_path / "grid=A,B" / "s1", tmp_path / "lr=1e-4,bs=8" / "s2"
    write_job(first, "draem", "A", {"A": 1.0, "B": 0.8, "C": 0.7, "D": 0.6})
    write_job(second, "patchcore", "B", {"A": 0.9, "B": 0.95, "C": 0.85, "D": 0.8})
    assert report_main([f"dir={first}", f"dir={second}"]) == 0
    out = capsys.readouterr().out
    assert f"== {first}\n1 jobs" in out and f"== {second}\n1 jobs" in out
    assert list(pd.read_csv(first / "summary.csv")["model"]) == ["draem"]
    assert list(pd.read_csv(second / "summary.csv")["model"]) == ["patchcore"]
