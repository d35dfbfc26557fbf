"""Where a run's numbers come from, recorded with them (metrics.json `provenance`): the project's commit and
whether its tracked files had uncommitted changes, the CPU model, and the GPU with its driver when one is used.
"""

import platform
import subprocess
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]


def git(*args: str) -> str | None:
    """A git command's output in the project folder; None when it is no git checkout or git is missing."""
    try:
        done = subprocess.run(["git", "-C", str(PROJECT_DIR), *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu(device: str) -> dict:
    """GPU name, driver and CUDA version of a run on `device` (cuda, cuda:1, ...); {} for a CPU run."""
    if not device.startswith("cuda"):
        return {}
    import torch

    index = torch.device(device).index or 0
    driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", f"--id={index}"],
                            capture_output=True, text=True, timeout=10, check=False) if Path("/usr/bin/nvidia-smi").exists() else None
    return {"gpu": torch.cuda.get_device_name(index), "gpu_driver": driver.stdout.strip() if driver and driver.returncode == 0 else None,
            "cuda": torch.version.cuda}


def provenance(device: str) -> dict:
    """metrics.json `provenance`: commit, dirty (uncommitted changes to tracked files; None outside a checkout),
    cpu, and on a GPU its name, driver and CUDA version.
    """
    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if changes is None else bool(changes), "cpu": cpu_model(), **gpu(device)}
