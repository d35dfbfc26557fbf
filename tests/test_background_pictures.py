"""A sequential sweep's pictures drawn by a helper process (hdmap_train.background_pictures): which sweeps use it,
the pictures and TensorBoard images it writes, the record it writes then, a picture error, the backlog bound, and a
helper that died, its priority."""

import gc
import json
import os
import signal
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hdmap_train import background_pictures
from hdmap_train.background_pictures import BASIC_LAUNCHER, MAX_PENDING, draw, jobs_run_here, wait_for_pictures, write_when_drawn
from hdmap_train.devices import JOBLIB_LAUNCHER

THRESHOLD = 0.5


def hydra_cfg(mode: RunMode, launcher: str, n_jobs: int = 1):
    return OmegaConf.create({"mode": mode, "launcher": {"_target_": launcher, "n_jobs": n_jobs}})


@pytest.mark.parametrize(("cfg", "here"), [
    (hydra_cfg(RunMode.RUN, BASIC_LAUNCHER), False),
    (hydra_cfg(RunMode.MULTIRUN, BASIC_LAUNCHER), True),
    (hydra_cfg(RunMode.MULTIRUN, JOBLIB_LAUNCHER, n_jobs=1), True),
    (hydra_cfg(RunMode.MULTIRUN, JOBLIB_LAUNCHER, n_jobs=2), False),  # loky worker processes
    (hydra_cfg(RunMode.MULTIRUN, "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"), False),
])
def test_only_jobs_run_one_after_another_in_this_process_draw_in_the_background(cfg, here: bool) -> None:
    assert jobs_run_here(cfg) is here


def predictions() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 10)
    return pd.concat([pd.DataFrame({"domain": domain, "split": "test", "image_path": [f"/{domain}/{i}.png" for i in range(20)],
                                    "label": labels, "anomaly_score": rng.normal(labels, 0.5), "predicted_label": 0, "subgroup": ""})
                      for domain in ("domain_A", "domain_B")], ignore_index=True)


def pictures(run_dir: Path) -> tuple:
    """write_pictures' arguments for a run directory (no anomaly-map examples)."""
    return run_dir / "plots", run_dir / "tensorboard", 5, predictions(), THRESHOLD, ["domain_A"], {}, 2


def test_the_helper_draws_the_pictures_then_the_record_says_success(tmp_path: Path) -> None:
    record = {"status": "success", "error": None, "source_domain": "domain_A"}
    write_when_drawn(draw(*pictures(tmp_path)), record, tmp_path / "metrics.json")
    wait_for_pictures()
    assert json.loads((tmp_path / "metrics.json").read_text()) == record
    assert {path.name for path in (tmp_path / "plots").iterdir()} == {"roc.png", "score_histograms.png"}
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == {"plots/roc", "plots/score_histograms"}
    assert events.Images("plots/roc")[0].step == 5


def test_a_picture_error_fails_the_record(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "plots").write_text("a file where the plots folder goes")
    record = {"status": "success", "error": None}
    write_when_drawn(draw(*pictures(tmp_path)), record, tmp_path / "metrics.json")
    wait_for_pictures()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "failed" and saved["error"].startswith("Pictures not written: FileExistsError")
    assert f"{tmp_path}: Pictures not written" in caplog.text


def test_a_job_waits_once_more_than_max_pending_jobs_wait_for_their_pictures(tmp_path: Path) -> None:
    drawing = [Future() for _ in range(MAX_PENDING + 1)]
    for index, future in enumerate(drawing[:MAX_PENDING]):
        write_when_drawn(future, {"status": "success", "error": None, "job": index}, tmp_path / f"{index}.json")  # returns at once
    one_more = threading.Thread(target=write_when_drawn, args=(drawing[-1], {"status": "success"}, tmp_path / "last.json"))
    one_more.start()
    time.sleep(0.3)
    assert one_more.is_alive() and not list(tmp_path.glob("*.json"))
    drawing[0].set_result(None)  # the oldest job's pictures are done: its record is written, the last job goes on
    one_more.join(timeout=10)
    assert not one_more.is_alive() and json.loads((tmp_path / "0.json").read_text()) == {"status": "success", "error": None, "job": 0}
    for future in drawing[1:]:
        future.set_result(None)
    wait_for_pictures()
    assert len(list(tmp_path.glob("*.json"))) == MAX_PENDING + 1 and not background_pictures._pending


def test_a_new_helper_replaces_one_that_died(tmp_path: Path) -> None:
    background_pictures.start_helper()
    (process,) = background_pictures._helper._processes.values()
    process.kill()  # as the out-of-memory killer would
    process.join()
    records = [{"status": "success", "error": None} for _ in range(2)]
    for index, record in enumerate(records):  # the first may go to the dead helper before it is seen dead
        write_when_drawn(draw(*pictures(tmp_path / str(index))), record, tmp_path / f"{index}.json")
        wait_for_pictures()
    assert records[0]["status"] == "success" or records[0]["error"].startswith("Pictures not written: BrokenProcessPool")
    assert json.loads((tmp_path / "1.json").read_text())["status"] == "success" and (tmp_path / "1" / "plots" / "roc.png").is_file()


def test_the_helper_runs_at_the_lowest_priority_ignores_ctrl_c_and_froze_its_imports() -> None:
    background_pictures.start_helper()
    assert background_pictures._submit(os.nice, 0).result(timeout=60) == background_pictures.HELPER_NICENESS
    assert background_pictures._submit(signal.getsignal, signal.SIGINT).result(timeout=60) == signal.SIG_IGN
    assert background_pictures._submit(gc.get_freeze_count).result(timeout=60) > 100_000  # startup.heavy_imports
    assert os.nice(0) < background_pictures.HELPER_NICENESS  # this process keeps its priority
