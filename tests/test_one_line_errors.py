"""Inputs the code cannot handle stop with one line, a non-zero exit and no success record: a full disk, bad
numbers, impossible GPU sharing, read-only output folders, mixed image sizes."""

import errno
import json
import logging
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from hdmap_train.checks import check_config
from hdmap_train.data.images import check_native_sizes, read_images
from hdmap_train.errors import HdmapError
from hdmap_train.evaluate import new_directory
from hdmap_train.report import main as report_main
from helpers.config import compose_cfg
from helpers.sweeps import write_job


def one_error_line(result: subprocess.CompletedProcess, message: str) -> None:
    text = result.stdout + result.stderr
    assert result.returncode == 1, text[-3000:]
    assert message in text, text[-3000:]
    assert "Traceback" not in text and "Logging error" not in text, text[-3000:]
    assert sum("ERROR" in line for line in text.splitlines()) == 1, text[-3000:]


def small_files_only() -> None:
    """In the child: files beyond 300 kB cannot be written (EFBIG), as on a disk that just filled up."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))


def test_a_full_disk_during_a_run_is_one_line_and_leaves_no_truncated_checkpoint(tiny_dataset: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["model=draem", "trainer=cpu", "trainer.enable_progress_bar=false", "size=tiny", "model.max_epochs=1",
            "evaluation.plots=false", f"data.root={tiny_dataset}", f"hydra.run.dir={run_dir}"]
    result = subprocess.run([sys.executable, "-m", "hdmap_train", *args], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900, check=False, preexec_fn=small_files_only)
    one_error_line(result, "Cannot write ")
    assert "free disk space" in result.stdout + result.stderr
    assert not list(run_dir.rglob("*.ckpt")) and not list(run_dir.rglob("*.partial"))
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("value", ["abc", "null", "1.5"])
def test_a_threshold_quantile_that_is_no_number_in_range_is_refused(value: str, tmp_path: Path) -> None:
    cfg = compose_cfg([f"evaluation.threshold_quantile={value}", "data.root=/data/x"], tmp_path)
    with pytest.raises(HdmapError, match=f"evaluation.threshold_quantile={value if value != 'null' else 'None'} must be "
                                         r"a number in \(0, 1\]"):
        check_config(cfg)


def test_jobs_per_gpu_zero_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "hdmap_train", "--multirun", "hydra/launcher=gpus", "jobs_per_gpu=0",
                             f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, check=False)
    one_error_line(result, "gpus_per_job=1 and jobs_per_gpu=0 must both be at least 1.")
    assert not (tmp_path / "sweep").exists()


def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, "Read-only file system")


def test_report_on_a_read_only_sweep_folder_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    write_job(tmp_path, "draem", "A", {"A": 1.0, "B": 0.8, "C": 0.7, "D": 0.6})
    monkeypatch.setattr(pd.DataFrame, "to_csv", read_only)
    assert report_main([f"dir={tmp_path}"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"error: cannot write the summary into {tmp_path} (Read-only file system): make the folder "
                     "writable, or copy it somewhere writable and report the copy."]


def test_evaluate_into_a_read_only_out_is_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(HdmapError, match=f"Cannot write out={tmp_path / 'new'} \\(Read-only file system\\): pass a writable out="):
        new_directory(tmp_path, str(tmp_path / "new"))


def test_mixed_image_sizes_are_resized_and_said_or_stop_where_pad_would_crop(tmp_path: Path, caplog) -> None:
    files = [tmp_path / f"{i:03d}.tiff" for i in range(3)]
    for path, shape in zip(files, [(31, 95), (31, 95), (40, 100)], strict=True):
        tifffile.imwrite(path, np.zeros(shape, np.float32))
    images = list(read_images(files, "domain_A train").values())
    with caplog.at_level(logging.WARNING, logger="hdmap_train.data.images"):
        check_native_sizes(files, images, (32, 96), "bilinear", "domain_A train")
    (record,) = caplog.records
    assert record.getMessage() == (f"domain_A train holds images of 2 sizes (31x95: 2, 40x100: 1; the first of another size "
                                   f"than the first image: {files[2]}); each is brought to 32x96 by data.resize=bilinear.")
    check_native_sizes(files[:2], images[:2], (32, 96), "pad", "domain_A train")  # smaller: padded, nothing lost
    with pytest.raises(HdmapError, match=re.escape(f"Image {files[2]} is 40x100, larger than data.image_size=[32, 96], and "
                                                   "data.resize=pad would crop it: raise data.image_size, or choose "
                                                   "data.resize=aspect_pad.")):
        check_native_sizes(files, images, (32, 96), "pad", "domain_A train")


def test_a_log_file_that_cannot_be_written_costs_one_warning_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from hdmap_train.log_file import LogFileHandler

    class FullDisk:
        def write(self, text: str) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self) -> None:
            pass

    handler = LogFileHandler(tmp_path / "train.log")
    handler.stream.close()
    handler.stream = FullDisk()
    logger = logging.getLogger("hdmap_train.test_full_disk_log")
    logger.addHandler(handler)
    try:
        for epoch in range(3):
            logger.warning("epoch %d", epoch)
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err
    assert err.splitlines() == [f"[WARNING] {tmp_path / 'train.log'} cannot be written (No space left on device): its later "
                                "lines are lost; free disk space."]


def test_train_log_is_written_by_that_handler(tmp_path: Path) -> None:
    cfg = compose_cfg(["data.root=/data/x"], tmp_path)
    assert cfg.hydra.job_logging.handlers.file["class"] == "hdmap_train.log_file.LogFileHandler"


def test_a_config_error_leaves_no_run_folder_and_keeps_an_earlier_runs(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "hdmap_train", "data=synthetic", "data.val_fraction=2", "trainer=cpu"]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    one_error_line(result, "data.val_fraction=2 must lie strictly between 0 and 1")
    assert not [path for path in (tmp_path / "outputs").rglob("*") if path.is_file()]  # no metrics.json, no train.log
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "metrics.json").write_text('{"status": "success"}')
    result = subprocess.run([*args, f"hydra.run.dir={earlier}"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 1 and (earlier / "metrics.json").read_text() == '{"status": "success"}'
