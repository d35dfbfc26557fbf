"""bench/latency.py: its table and summary line on a CPU at tiny size, with few passes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "latency.py"
COLUMNS = ["model", "image size", "weights", "bank rows", "warm-up", "passes", "mean ms", "std ms", "min ms", "max ms",
           "peak MiB"]


@pytest.mark.slow
def test_tiny_latency_table_on_a_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(BENCH), "--cpu", "--size", "tiny", "--warmup", "2", "--passes", "4",
                             "--n-train", "8"], capture_output=True, text=True, timeout=600, check=False, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("CPU (") and "batch 1, size=tiny" in lines[0] and "peak RSS" in lines[0]
    table = [line for line in lines if line.startswith("|")]
    assert [cell.strip() for cell in table[0].strip("|").split("|")] == COLUMNS
    rows = {row["model"]: row for row in (dict(zip(COLUMNS, (c.strip() for c in line.strip("|").split("|")), strict=True))
                                          for line in table[2:])}
    assert list(rows) == ["draem", "patchcore"]
    assert rows["draem"]["weights"] == "none" and rows["draem"]["bank rows"] == "-"
    assert rows["patchcore"]["weights"] == "random (not in the local cache)"  # an empty cache: random weights, said so
    assert int(rows["patchcore"]["bank rows"]) > 0  # fitted before it is timed
    for row in rows.values():
        assert row["image size"] == "32x96" and (row["warm-up"], row["passes"]) == ("2", "4")
        low, mean, high = (float(row[column]) for column in ("min ms", "mean ms", "max ms"))
        assert 0 < low <= mean <= high and float(row["std ms"]) >= 0 and int(row["peak MiB"]) > 100
    assert lines[-1] == (f"summary: mean latency per image (batch 1, CPU, 2 warm-up + 4 timed passes): draem "
                         f"{float(rows['draem']['mean ms']):.2f} ms, patchcore {float(rows['patchcore']['mean ms']):.2f} ms")
