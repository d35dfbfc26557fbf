"""A sweep job killed with SIGKILL (as by the out-of-memory killer) under hydra/launcher=gpus fails alone: it is
recorded as killed, the other jobs finish, the summary is written, and the sweep exits 1."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


def job_folder(sweep: Path, override: str) -> Path | None:
    """The job folder whose overrides include `override` (None while it is not there)."""
    for overrides in sweep.glob("*/.hydra/overrides.yaml"):
        if f"- {override}\n" in overrides.read_text():
            return overrides.parent.parent
    return None


def test_a_killed_job_is_recorded_and_the_other_jobs_finish(tiny_dataset: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["--multirun", "hydra/launcher=gpus", "model=draem", "trainer=cpu", "trainer.enable_progress_bar=false",
            "size=tiny", "evaluation.plots=false", "model.early_stopping_patience=1000", f"data.root={tiny_dataset}",
            f"hydra.sweep.dir={sweep}", "model.max_epochs=1,1000"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"}  # two fake GPUs: two slots, both jobs at once
    sweeper = subprocess.Popen([sys.executable, "-m", "hdmap_train", *args], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 900
        while not (endless := job_folder(sweep, "model.max_epochs=1000")) or not (endless / "checkpoints" / "last.ckpt").is_file():
            assert sweeper.poll() is None and time.monotonic() < deadline, "the endless job saved no checkpoint"
            time.sleep(0.2)
        pid = int((endless / ".run.lock").read_text().split()[1])  # the process training that job
        os.kill(pid, signal.SIGKILL)
        output, _ = sweeper.communicate(timeout=900)
    finally:
        if sweeper.poll() is None:
            sweeper.kill()
    assert sweeper.returncode == 1, output[-3000:]
    killed = json.loads((endless / "metrics.json").read_text())
    assert killed["status"] == "failed" and f"process {pid} was killed by SIGKILL" in killed["error"]
    assert json.loads((job_folder(sweep, "model.max_epochs=1") / "metrics.json").read_text())["status"] == "success"
    table = pd.read_csv(sweep / "summary.csv")
    assert sorted(table["status"]) == ["failed", "success"]
    assert "[sweep] job" in output and "TerminatedWorkerError" not in output
