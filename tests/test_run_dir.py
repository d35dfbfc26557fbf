"""The run directory: one live run per directory, corrupt state never blocks or misleads, resume loses nothing,
Ctrl-C and unwritable directories say so in one line."""

import json
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from hdmap_train import train
from hdmap_train.data import datamodule as datamodule_module
from hdmap_train.errors import HdmapError
from hdmap_train.run_dir import claim, earlier_attempt
from helpers.config import compose_cfg
from helpers.runs import run_cli

ENDLESS_DRAEM = ["model=draem", "trainer=cpu", "trainer.enable_progress_bar=false", "size=tiny",
                 "model.max_epochs=1000", "model.early_stopping_patience=1000", "evaluation.plots=false"]


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def start_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hdmap_train", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 900) -> None:
    """Wait until `path` exists (the process must still be running)."""
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert process.poll() is None, f"the run ended (rc {process.returncode}) before writing {path}"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.05)


def one_error_line(result: subprocess.CompletedProcess, message: str) -> None:
    text = output(result)
    assert result.returncode == 1, text[-3000:]
    assert message in text, text[-3000:]
    assert "Traceback" not in text
    assert sum("ERROR" in line for line in text.splitlines()) == 1, text[-3000:]


@pytest.mark.slow
def test_second_run_stops_then_killed_run_resumes_with_its_whole_history(tmp_path: Path, tiny_dataset: Path) -> None:
    run_dir = tmp_path / "run"
    first = start_cli([*ENDLESS_DRAEM, f"data.root={tiny_dataset}", f"hydra.run.dir={run_dir}"], tmp_path)
    try:
        wait_for(run_dir / "checkpoints" / "last.ckpt", first)
        config = (run_dir / ".hydra" / "config.yaml").read_bytes()
        second = run_cli([*ENDLESS_DRAEM, f"data.root={tiny_dataset}", f"hydra.run.dir={run_dir}", "seed=7"], cwd=tmp_path)
        one_error_line(second, f"is in use by a live run (pid {first.pid} ")
        assert (run_dir / ".hydra" / "config.yaml").read_bytes() == config, "the second run must not touch the first's files"
        assert not (run_dir / "metrics.json").exists()
    finally:
        first.kill()  # SIGKILL: no metrics.json, no clean-up; the OS frees the lock
        first.wait()
    assert not (run_dir / "metrics.json").exists()
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    state = saved["callbacks"]["TrainingHistory"]
    epochs_done = len(state["history"]["train_loss"])
    assert epochs_done >= 1 and len(state["history"]["val_loss"]) == epochs_done

    resumed = run_cli([*ENDLESS_DRAEM, f"model.max_epochs={epochs_done + 1}", f"data.root={tiny_dataset}",
                       f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert resumed.returncode == 0, output(resumed)[-3000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    info = record["training_info"]
    assert record["status"] == "success" and info["attempts"] == 2
    assert info["last_trained_epoch"] == epochs_done + 1
    assert len(info["train_loss_per_epoch"]) == len(info["val_loss_per_epoch"]) == epochs_done + 1
    assert info["train_loss_per_epoch"][:epochs_done] == state["history"]["train_loss"]
    assert info["train_images_per_epoch"] == [36] * (epochs_done + 1)
    assert info["fit_seconds"] > state["fit_seconds"]


@pytest.mark.slow
def test_ctrl_c_during_fit_is_recorded_as_interrupted_with_how_to_resume(tmp_path: Path, tiny_dataset: Path) -> None:
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "hdmap_train", *ENDLESS_DRAEM, f"data.root={tiny_dataset}", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for(run_dir / "checkpoints" / "last.ckpt", process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=600)  # graceful shutdown, then the record: slow on a busy CPU
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    one_error_line(result, "Interrupted (Ctrl-C) during training after epoch")
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and f"hydra.run.dir={run_dir}" in record["error"]
    assert "SystemExit" not in record["error"]


def test_unwritable_run_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    one_error_line(run_cli([f"hydra.run.dir={tmp_path / 'a_file' / 'run'}"], cwd=tmp_path),
                   f"Cannot write the run directory (hydra.run.dir) {tmp_path / 'a_file' / 'run'}")


def test_lock_of_a_killed_process_is_free_again(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from hdmap_train.run_dir import claim; "
         "claim(Path(sys.argv[1])); print('held', flush=True); time.sleep(120)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(HdmapError, match=f"in use by a live run \\(pid {holder.pid} "):
            claim(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    claim(tmp_path)  # no error: the OS released the killed holder's lock


@pytest.fixture
def no_data_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a run gets as far as building its datamodule."""

    def refuse(*args, **kwargs):
        raise AssertionError("the checkpoint must be checked before any data is read")

    monkeypatch.setattr(datamodule_module, "build_datamodule", refuse)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
def test_bad_checkpoint_stops_before_data_setup(damage: str, tmp_path: Path, tiny_dataset: Path, no_data_setup: None) -> None:
    ckpt = tmp_path / "given.ckpt"
    if damage != "missing":
        torch.save({"state_dict": {"w": torch.zeros(1000)}}, ckpt)
        data = ckpt.read_bytes()
        ckpt.write_bytes(b"not a checkpoint" if damage == "garbage" else data[: len(data) // 2])
    cfg = compose_cfg([f"data.root={tiny_dataset}", f"ckpt_path={ckpt}"], tmp_path / "run")
    expected = "does not exist" if damage == "missing" else "is truncated or corrupt"
    with pytest.raises(HdmapError, match=f"Checkpoint {ckpt} .*{expected}.*ckpt_path="):
        train.run(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "failed"


def test_corrupt_last_checkpoint_found_on_resume_names_the_fix(tmp_path: Path, tiny_dataset: Path, no_data_setup: None) -> None:
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    with zipfile.ZipFile(last, "w") as archive:
        archive.writestr("archive/version", "3")  # a zip, but no pickled checkpoint in it
    cfg = compose_cfg([f"data.root={tiny_dataset}", f"ckpt_path={last}"], tmp_path)
    with pytest.raises(HdmapError, match=f"found on resume.*rm {last}"):
        train.run(cfg, tmp_path)


def test_corrupt_metrics_json_is_kept_aside_and_the_run_starts_anew(tmp_path: Path, caplog) -> None:
    (tmp_path / "metrics.json").write_text('{"status": "succ')  # truncated by a full disk
    cfg = compose_cfg(["data.root=/data/x"], tmp_path)
    assert earlier_attempt(cfg, tmp_path) == (None, None)
    kept = list(tmp_path.glob("metrics.corrupt-*.json"))
    assert len(kept) == 1 and kept[0].read_text() == '{"status": "succ'
    assert not (tmp_path / "metrics.json").exists()
    assert "unreadable" in caplog.text and kept[0].name in caplog.text
