"""Each sweep job's config is composed once (hdmap_train.hydra_patches), and it is the config Hydra would compose."""

import subprocess
import sys
from pathlib import Path

import yaml

# Counts Hydra's compositions in a `python -m hdmap_train` process; every job stops at check_config (no torch).
PROBE = """
import runpy, sys
from hydra._internal.config_loader_impl import ConfigLoaderImpl
compose, count = ConfigLoaderImpl.load_configuration, []
def counted(*args, **kwargs):
    count.append(1)
    return compose(*args, **kwargs)
ConfigLoaderImpl.load_configuration = counted
sys.argv = ["hdmap_train", *sys.argv[1:]]
try:
    runpy.run_module("hdmap_train", run_name="__main__")
except SystemExit:
    pass
print(f"COMPOSITIONS={len(count)}")
"""
JOBS = ["seed=1,2,3", "data.val_fraction=2.0"]  # three jobs that fail at once (invalid val_fraction)
SWEEP_CONFIG = 2  # Hydra composes the sweep's own config twice (once to read hydra.mode)


def sweep(tmp_path: Path, sweep_dir: str, *extra: str) -> int:
    """Run the three-job sweep into sweep_dir; returns how many configs Hydra composed."""
    result = subprocess.run([sys.executable, "-c", PROBE, "--multirun", *JOBS, f"hydra.sweep.dir={sweep_dir}", *extra],
                            cwd=tmp_path, capture_output=True, text=True, check=False)
    assert "COMPOSITIONS=" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    return int(result.stdout.split("COMPOSITIONS=")[1].split()[0])


def job_configs(sweep_dir: Path) -> dict[str, tuple[dict, dict]]:
    """{job folder: (its task config, its hydra.job section)} with the sweep dir's path left out."""
    jobs = {}
    for folder in sorted(path for path in sweep_dir.iterdir() if (path / ".hydra").is_dir()):
        text = {name: (folder / ".hydra" / name).read_text().replace(str(sweep_dir), "<sweep>") for name in ("config.yaml", "hydra.yaml")}
        jobs[folder.name] = (yaml.safe_load(text["config.yaml"]), yaml.safe_load(text["hydra.yaml"])["hydra"]["job"])
    return jobs


def test_each_job_is_composed_once_into_the_sweep_dir(tmp_path: Path) -> None:
    # %f: a second resolution of ${now:} in a job would name another sweep dir
    assert sweep(tmp_path, f"{tmp_path}/once/" + "${now:%H-%M-%S-%f}") == SWEEP_CONFIG + 3  # each job once
    (sweep_dir,) = (tmp_path / "once").iterdir()
    assert len(job_configs(sweep_dir)) == 3 and (sweep_dir / "summary.csv").is_file()


def test_the_jobs_get_the_configs_hydra_composes(tmp_path: Path) -> None:
    assert sweep(tmp_path, str(tmp_path / "once")) == SWEEP_CONFIG + 3
    assert sweep(tmp_path, str(tmp_path / "twice"), "~hydra.callbacks.compose_once") == SWEEP_CONFIG + 2 * 3  # Hydra alone
    once, twice = job_configs(tmp_path / "once"), job_configs(tmp_path / "twice")
    assert len(once) == 3 and once == twice
    assert sorted(job["num"] for _, job in once.values()) == [0, 1, 2]
