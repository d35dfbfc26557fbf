"""bench/gpu.py: its Markdown table on a CPU (--tiny), and at paper size on a GPU."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"
COLUMNS = ["model", "image size", "batch", "precision", "parameters (M)", "trainable (M)", "train img/s", "new-shape s",
           "data wait %", "fit s", "infer img/s", "peak MiB"]


def load_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_steady_state_leaves_out_warmup_and_the_first_batch_of_every_shape() -> None:
    full, last = (4, 1, 8, 8), (2, 1, 8, 8)
    steps = [(0.0, 5.0, 4, full),    # the first step: a new shape (CUDA start, autotuning)
             (0.1, 0.9, 4, full),    # warm-up
             (0.1, 0.9, 4, full), (0.3, 0.7, 4, full),
             (0.0, 3.0, 2, last),    # the last partial batch: a new shape, out of the rate
             (0.1, 0.9, 4, full)]
    steady = load_bench().steady_state(steps, warmup=2)
    assert steady["images_per_second"] == pytest.approx(12 / 3.0)
    assert steady["data_wait_share"] == pytest.approx(0.5 / 3.0)
    assert steady["new_shape_seconds"] == pytest.approx((5.0 - 1.0) + (3.0 - 0.5))


def bench_table(tmp_path: Path, *args: str) -> dict[str, dict[str, str]]:
    """Run bench/gpu.py with `args`, check stdout and --out agree, and return its rows by model."""
    out = tmp_path / "gpu.md"
    result = subprocess.run([sys.executable, str(BENCH), *args, "--out", str(out)], capture_output=True, text=True, timeout=600,
                            check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    table = out.read_text()
    assert table in result.stdout
    lines = [line for line in table.split("One steady training step")[0].splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == COLUMNS and lines[1] == "|" + "---|" * len(COLUMNS)
    rows = [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True)) for line in lines[2:]]
    return {row["model"]: row for row in rows}


@pytest.mark.slow
def test_tiny_bench_runs_all_four_models_and_splits_their_steps(tmp_path: Path) -> None:
    rows = bench_table(tmp_path, "--tiny", "--n-train", "20", "--n-test", "4", "--train-batches", "3", "--warmup", "1",
                       "--profile", "--profile-steps", "1")
    assert list(rows) == ["draem", "draem_cutpaste", "patchcore", "dinomaly"]
    assert rows["draem"]["image size"] == "32x96" and rows["draem"]["precision"] == "32-true"
    assert float(rows["draem"]["trainable (M)"]) == float(rows["draem"]["parameters (M)"]) > 0
    assert float(rows["patchcore"]["trainable (M)"]) == 0  # a memory bank: nothing optimised
    for row in rows.values():
        assert all(float(row[column]) > 0 for column in ("train img/s", "fit s", "infer img/s", "peak MiB"))
        assert 0 <= float(row["data wait %"]) < 100 and float(row["new-shape s"]) >= 0
    table = (tmp_path / "gpu.md").read_text()
    parts = {line.split("|")[1].strip(): [float(cell) for cell in line.strip("|").split("|")[1:]]
             for line in table.split("One steady training step")[1].splitlines() if line.startswith("| d")}
    assert {"draem", "draem_cutpaste", "dinomaly"} <= set(parts)
    for model, (*ms, total) in parts.items():
        assert all(value >= 0 for value in ms) and total == pytest.approx(sum(ms), abs=0.05)
        assert ms[2] > 0 and (ms[3] > 0 or model == "patchcore")  # forward; backward where a model learns
    assert parts["draem"][1] > 0 and parts["draem_cutpaste"][1] > 0 and parts["dinomaly"][1] == 0  # synthesis
    assert "region synthesis: " in (tmp_path / "gpu.draem.profile.txt").read_text()


@pytest.mark.slow
def test_tiny_bench_with_the_device_cache(tmp_path: Path) -> None:
    rows = bench_table(tmp_path, "--tiny", "--models", "draem", "--n-train", "20", "--n-test", "4", "--train-batches", "2",
                       "--warmup", "1", "--data", "device_cache=true")
    assert "data.device_cache=true" in (tmp_path / "gpu.md").read_text().splitlines()[0]
    assert float(rows["draem"]["train img/s"]) > 0 and float(rows["draem"]["infer img/s"]) > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_paper_size_bench_on_a_gpu(tmp_path: Path) -> None:
    rows = bench_table(tmp_path, "--random-weights", "--models", "draem", "patchcore", "dinomaly", "--n-train", "200", "--n-test", "32")
    assert {model: row["precision"] for model, row in rows.items()} == {"draem": "32-true", "patchcore": "32-true", "dinomaly": "16-mixed"}
    assert rows["draem"]["image size"] == "224x224" and all(float(row["peak MiB"]) > 0 for row in rows.values())
