"""What a run and a sweep tell people as they go: train.log (config, data, epochs, results), the sweep's per-job lines,
the synthetic generator's progress, the run folder's name, and one TensorBoard run with the data settings."""

import json
import logging
import os
import pickle
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

from hdmap_train.background_pictures import PICTURES_PENDING
from hdmap_train.data.synthetic import SyntheticSpec, generate
from hdmap_train.hydra_callbacks import JobProgress
from hdmap_train.run_dir import RUN_LOCK
from hdmap_train.tensorboard_log import HPARAM_METRICS
from helpers.runs import run_cli
from helpers.sweeps import write_job

TINY = ["size=tiny", "trainer=cpu", "trainer.enable_progress_bar=false", "model=draem"]


@pytest.mark.slow
def test_run_logs_config_data_epochs_and_results_into_one_tensorboard_run(tmp_path: Path, tiny_dataset: Path) -> None:
    result = run_cli([*TINY, f"data.root={tiny_dataset}", "model.max_epochs=2", "name=log_check"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs").glob("*/*_log_check")  # outputs/<date>/<time>_<name>
    text = (run_dir / "train.log").read_text()
    assert f"Config {run_dir}/.hydra/config.yaml: model=draem size=tiny" in text and f"(root {tiny_dataset})" in text
    assert re.search(r"Data .*: train \d+ .*validation \d+ \(\d+ normal, 0 fault; normal\), test domain_A 24, domain_B 24.*"
                     r"native 31x95 -> 32x96 \(bilinear, 3 channel\(s\)\) \| normalisation none \(stats source\)"
                     r" \| cache resized .*\| manifest sha256 [0-9a-f]{12}", text)
    epochs = re.findall(r"Epoch (\d)/2: train_loss [\d.e-]+, val_loss [\d.e-]+ \| \d+ images", text)
    assert epochs == ["1", "2"]
    assert "Training max_epochs_reached after 2 epoch(s)" in text
    table = text[text.index("Results:"):]
    assert "domain_A" in table and "TPR@1" in table and "validation threshold" in table
    assert "draem | source domain_A AUROC " in table and f"| {run_dir}" in table
    assert text.count("TPR@1 TPR@5") == 1 and result.stdout.count("TPR@1 TPR@5") == 1  # terminal: the rich table only

    runs = EventMultiplexer().AddRunsFromDirectory(str(run_dir / "tensorboard")).Reload().Runs()
    assert list(runs) == ["."]  # fit and evaluation in one TensorBoard run
    hparams = EventMultiplexer({"run": str(run_dir / "tensorboard")}).Reload().PluginRunToTagToContent("hparams")["run"]
    settings = hparams["_hparams_/session_start_info"]
    for key in ("data/normalization/mode", "data/normalization/stats", "data/resize", "data/channels",
                "data/validation", "data/manifest_sha256", "data/root"):
        assert key.encode() in settings, key
    assert all(tag.encode() in hparams["_hparams_/experiment"] for tag in [*HPARAM_METRICS.values(), "hp_metric"])


@pytest.mark.slow
def test_sweep_prints_one_line_per_job_as_it_finishes(tmp_path: Path, tiny_dataset: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli(["--multirun", f"hydra.sweep.dir={sweep}", *TINY, f"data.root={tiny_dataset}", "model.max_epochs=1",
                      "domain=A,B", "evaluation.plots=false", "+hydra.callbacks.job_progress.interval_s=0.2"], cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("[sweep] job ") and " finished " in line]
    assert len(lines) == 2, output[-4000:]
    for number, (line, source) in enumerate(zip(lines, "AB", strict=True), start=1):
        assert re.match(rf"\[sweep\] job {number} finished after 0:\d\d:\d\d: draem \| source domain_{source} AUROC [\d.]+ "
                        r"\| avg target AUROC [\d.]+ \| transfer ratio ", line), line
        job = Path(line.rsplit(" | ", 1)[1])
        assert "| success | fit " in line and job.parent == sweep and job.name.startswith(f"domain={source},")
        assert json.loads((job / "metrics.json").read_text())["source_domain"] == f"domain_{source}"
    # reported while the second job ran (the launcher returns only at the end), not after it. Without pictures:
    # a helper at the lowest priority may draw job 1's only once job 2 is done (test_background_pictures)
    second = Path(lines[1].rsplit(" | ", 1)[1])
    assert result.stdout.index(lines[0]) < result.stdout.index(f"results: {second}/")
    for line in lines:  # each job's start line comes before its end line
        started = f"[sweep] job started: {Path(line.rsplit(' | ', 1)[1]).name} at "
        assert started in result.stdout and result.stdout.index(started) < result.stdout.index(line)


def test_job_progress_reports_new_and_rewritten_records_only(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    done = write_job(tmp_path, "draem", "A", {"A": 0.9, "B": 0.8, "C": 0.7, "D": 0.6})
    (done / ".hydra" / "config.yaml").touch()  # started before this sweep: no start line
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    progress = JobProgress(interval_s=60)
    progress.on_multirun_start(config)
    assert pickle.loads(pickle.dumps(progress)).interval_s == 60  # launchers pickle callbacks into their workers
    failed = write_job(tmp_path, "draem", "B", None, error="RuntimeError: boom\nTraceback ...")
    begun = datetime.now() - timedelta(seconds=5)
    os.utime(failed / ".hydra" / "config.yaml", (begun.timestamp(), begun.timestamp()))
    (failed / RUN_LOCK).write_text("pid 8 on host on GPU 1 since 2026-12-05 10:00:00")  # hydra/launcher=gpus: claimed
    record = json.loads((failed / "metrics.json").read_text())
    started = (datetime.now() - timedelta(minutes=2)).isoformat(timespec="seconds")
    (failed / "metrics.json").write_text(json.dumps({**record, "experiment_path": str(failed), "timestamp": started}))
    drawing = write_job(tmp_path, "draem", "C", None, error=PICTURES_PENDING)  # not finished: no line yet
    progress._report()
    progress.on_multirun_end(config)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"[sweep] 1 job(s) of {tmp_path} have a metrics.json already; finished ones are not trained again"
    assert str(drawing) not in "\n".join(out)
    assert len(out) == 4
    assert out[1] == f"[sweep] job started: {failed.name} at {begun:%H:%M:%S} (pid 8 on host on GPU 1 since 2026-12-05 10:00:00)"
    assert out[2].startswith(f"[sweep] job started: {drawing.name} at ") and "pid" not in out[2]  # started, not finished
    assert out[3].startswith("[sweep] job 1 finished after 0:02:0")
    assert out[3].endswith(f": draem | source domain_B AUROC n/a | avg target AUROC n/a | transfer ratio n/a"
                           f" | failed (RuntimeError: boom) | {failed}") and str(done) not in out[3]


def test_synthetic_generation_logs_each_domain(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="hdmap_train.data.synthetic"):
        generate(SyntheticSpec(n_train=2, n_test=2, domains=("A", "B")), tmp_path / "data")
    assert [r.getMessage().split(":")[0] for r in caplog.records][1:] == ["Synthetic domain_A written (1/2)",
                                                                          "Synthetic domain_B written (2/2)"]
    assert "train/good 2, test/good 2, test/fault 2" in caplog.records[-1].getMessage()
