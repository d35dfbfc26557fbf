"""metrics.json `provenance`: the commit and dirty flag of the project, the CPU model, a GPU only on a GPU run."""

import subprocess
from pathlib import Path

from hdmap_train import provenance as module


def test_commit_and_dirty_flag_of_a_checkout(tmp_path: Path, monkeypatch) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    for args in (["add", "code.py"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first"]):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True)
    monkeypatch.setattr(module, "PROJECT_DIR", tmp_path)
    clean = module.provenance("cpu")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert clean["commit"] == head and clean["dirty"] is False and "gpu" not in clean
    (tmp_path / "untracked.txt").write_text("not part of the code")
    assert module.provenance("cpu")["dirty"] is False  # untracked files do not make a run dirty
    (tmp_path / "code.py").write_text("x = 2\n")
    assert module.provenance("cpu")["dirty"] is True


def test_no_checkout_gives_none_not_a_guess(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(module, "PROJECT_DIR", tmp_path)
    found = module.provenance("cpu")
    assert found["commit"] is None and found["dirty"] is None


def test_cpu_model_is_named() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    name = module.cpu_model()
    assert name and (not cpuinfo.exists() or name in cpuinfo.read_text())
