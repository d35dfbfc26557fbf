"""What jobs cost in the sweep summary: metrics.json `efficiency` blocks become summary.csv columns, repeat
statistics and a cost table in summary.md; records without the block (older runs) still summarise."""

from pathlib import Path

import pandas as pd
import pytest

from hdmap_train.sweep.summary import write_summary
from helpers.sweeps import DOMAINS, squeezed, write_job

MIB = 2**20


def aurocs(source: str) -> dict[str, float]:
    return {d: 0.9 if d == source else 0.8 for d in DOMAINS}


def efficiency(parameters: int, images_per_s: float, peak_mb: float, device: str = "cuda:0", memory_bank: dict | None = None,
               gaussian: dict | None = None) -> dict:
    """An efficiency block as hdmap_train.efficiency.run_efficiency writes it."""
    return {"device": device, "precision": "32-true", "parameters_total": parameters, "parameters_trainable": 0,
            "inference_images": 96, "inference_seconds": 96 / images_per_s, "inference_images_per_second": images_per_s,
            "peak_memory_bytes": int(peak_mb * MIB), "peak_memory_source": "cuda_max_memory_allocated",
            "peak_rss_bytes": 3 * 2**30, "memory_bank": memory_bank, "gaussian": gaussian}


@pytest.fixture
def costed(tmp_path: Path) -> Path:
    """draem (two seeds with the block, one older record without), patchcore (coreset), padim (Gaussian)."""
    write_job(tmp_path, "draem", "A", aurocs("A"), seed=0, folder="draem,seed=0", efficiency=efficiency(97_000_000, 400.0, 900))
    write_job(tmp_path, "draem", "A", aurocs("A"), seed=1, folder="draem,seed=1", efficiency=efficiency(97_000_000, 600.0, 1100))
    write_job(tmp_path, "draem", "A", aurocs("A"), seed=2, folder="draem,seed=2")  # written before efficiency existed
    bank = {"rows": 1000, "dims": 384, "bytes": 1000 * 384 * 4, "dtype": "float32"}
    write_job(tmp_path, "patchcore", "A", aurocs("A"), folder="patchcore",
              efficiency=efficiency(2_800_000, 250.0, 512, device="cpu", memory_bank=bank))
    gaussian = {"mean_shape": [100, 64], "inv_covariance_shape": [64, 100, 100], "bytes": 3 * MIB, "dtype": "float32"}
    write_job(tmp_path, "padim", "A", aurocs("A"), folder="padim", efficiency=efficiency(11_000_000, 800.0, 256, gaussian=gaussian))
    write_job(tmp_path, "draem", "B", None, error="RuntimeError: CUDA out of memory", folder="draem,failed")
    return tmp_path


def test_summary_csv_has_the_cost_columns_of_every_job(costed: Path) -> None:
    write_summary(costed)
    table = pd.read_csv(costed / "summary.csv").set_index("job")
    assert list(table.columns[-7:]) == ["parameters_total", "inference_images_per_second", "peak_memory_mb", "memory_bank_mb",
                                        "inference_device", "weights", "error"]
    assert table.loc["draem,seed=0", ["parameters_total", "inference_images_per_second", "peak_memory_mb"]].tolist() == [97e6, 400.0, 900.0]
    assert table.loc["patchcore", "memory_bank_mb"] == pytest.approx(1000 * 384 * 4 / MIB)
    assert table.loc["patchcore", "inference_device"] == "cpu" and table.loc["padim", "memory_bank_mb"] == 3.0
    assert table.loc[["draem,seed=0", "draem,seed=2", "draem,failed"], "memory_bank_mb"].isna().all()
    assert table.loc[["draem,seed=2", "draem,failed"], ["parameters_total", "inference_device"]].isna().all().all()
    assert table.loc["draem,seed=2", "status"] == "success" and table.loc["draem,seed=2", "avg_target_auroc"] == pytest.approx(0.8)


def test_cost_statistics_count_only_jobs_that_recorded_it(costed: Path) -> None:
    write_summary(costed)
    stats = pd.read_csv(costed / "summary_stats.csv", keep_default_na=False)
    run_level = stats[stats["target"] == ""].set_index(["condition", "metric"])
    assert run_level.loc[("draem", "inference_images_per_second"), ["mean", "n"]].tolist() == [500.0, 2]
    assert run_level.loc[("draem", "avg_target_auroc"), "n"] == 3  # the older record still counts for its results
    assert ("draem", "memory_bank_mb") not in run_level.index  # no store: no row, not an n=0 one
    text = squeezed((costed / "summary.md").read_text())
    assert "| condition | source | parameters (M) | inference images/s | peak memory MiB | memory bank MiB | repeats |" in text
    assert "| draem | A | 97.00 ± 0.00 (n=2 of 3) | 500.0 ± 141.4 (n=2 of 3) | 1000 ± 141 (n=2 of 3) | - | - |" in text  # seed 2 recorded no cost
    assert "| patchcore | A | 2.80 (n=1 of 1) | 250.0 (n=1 of 1) | 512 (n=1 of 1) | 1.5 (n=1 of 1) | - |" in text
    assert "| padim | A | 11.00 (n=1 of 1) | 800.0 (n=1 of 1) | 256 (n=1 of 1) | 3.0 (n=1 of 1) | - |" in text


def test_records_without_efficiency_summarise_without_a_cost_table(tmp_path: Path) -> None:
    for source in "AB":
        write_job(tmp_path, "draem", source, aurocs(source))
    table = write_summary(tmp_path)
    assert table[["parameters_total", "inference_images_per_second", "peak_memory_mb", "memory_bank_mb"]].isna().all().all()
    text = squeezed((tmp_path / "summary.md").read_text())
    assert "## Cost per condition" not in text and "## Domain shift per condition" in text
