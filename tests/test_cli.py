"""The command line as users type it: `python -m hdmap_train ...` in a subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.runs import run_cli


def test_print_job_config(tmp_path: Path) -> None:
    result = run_cli(["--cfg", "job", "model=draem"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "_target_: hdmap_train.models.draem.HDMAPDraem" in result.stdout
    assert not list(tmp_path.rglob("metrics.json"))


@pytest.mark.parametrize(
    ("override", "message"), [("model=nosuch", "Could not find 'model/nosuch'"), ("domain=E", "Could not find 'domain/E'")]
)
def test_unknown_group_option(override: str, message: str, tmp_path: Path) -> None:
    result = run_cli([override], cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert "Available options" in result.stdout + result.stderr
    assert not list(tmp_path.rglob("metrics.json"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.root=/nonexistent"], "Dataset root /nonexistent does not exist"),
        (["model.max_epochs=-1"], "trainer.max_epochs=-1 must be a positive integer"),
        (["data.val_fraction=1.5"], "data.val_fraction=1.5 must lie strictly between 0 and 1"),
    ],
)
def test_bad_input_one_clear_error_and_no_success(overrides: list[str], message: str, tmp_path: Path, tiny_dataset: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli([f"data.root={tiny_dataset}", *overrides, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert message in output
    assert "Traceback" not in output
    assert sum("[ERROR]" in line for line in output.splitlines()) == 1
    assert not run_dir.exists()  # a config error is found before any work: no run folder is left behind


@pytest.mark.slow
def test_cli_run_succeeds(tmp_path: Path, tiny_dataset: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        ["model=draem", "trainer=cpu", f"data.root={tiny_dataset}", "size=tiny", "model.max_epochs=1",
         f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "success" and record["experiment_path"] == str(run_dir)
    assert "avg target AUROC" in result.stdout
    assert (run_dir / "train.log").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()


PROBE = """
import runpy, sys
sys.argv = ["hdmap_train", *sys.argv[1:]]
try:
    runpy.run_module("hdmap_train", run_name="__main__")
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch", "lightning", "anomalib") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
sys.exit(code)
"""


@pytest.mark.parametrize("args", [["model=nosuch"], ["--help"], ["--cfg", "job"], ["model.max_epochs=0", "data.root=/nonexistent"]])
def test_help_and_config_errors_never_import_torch(args: list[str], tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", PROBE, *args, f"hydra.run.dir={tmp_path / 'run'}"] if "=" in args[0]
                            else [sys.executable, "-c", PROBE, *args], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert "HEAVY=\n" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    if args[0].startswith("model.max_epochs"):  # a value error answers with one line and leaves no run folder
        assert result.returncode == 1 and "trainer.max_epochs=0 must be a positive integer" in result.stdout + result.stderr
        assert not (tmp_path / "run").exists()


GC_PROBE = """
import gc, json
from hdmap_train.startup import heavy_imports
collections = []
gc.callbacks.append(lambda phase, info: phase == "stop" and collections.append(info["generation"]))
with heavy_imports():
    import lightning, anomalib.models
during, frozen = list(collections), gc.get_freeze_count()
cycles = [[] for _ in range(1000)]
for cycle in cycles:
    cycle.append(cycle)
with heavy_imports():  # a later run of the same process (a sweep's next job): nothing more frozen
    import sklearn
del cycles, cycle
print(json.dumps({"during": during, "frozen": frozen, "frozen_later": gc.get_freeze_count() - frozen,
                  "enabled": gc.isenabled(), "collected": gc.collect()}))
"""


def test_the_heavy_imports_run_without_garbage_collections_and_leave_its_sight() -> None:
    result = subprocess.run([sys.executable, "-c", GC_PROBE], capture_output=True, text=True, check=True)
    probe = json.loads(result.stdout.splitlines()[-1])
    assert probe["during"] == [] and probe["frozen"] > 100_000 and probe["frozen_later"] == 0  # frozen once, never scanned
    assert probe["enabled"] and probe["collected"] >= 1000  # collection resumes, for whatever a run creates afterwards
