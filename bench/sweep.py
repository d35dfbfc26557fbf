"""Sweep wall time on CPU cores: 2 models x 4 domains with hydra/launcher=gpus at n_jobs=2 vs n_jobs=1
(and, with --anomalib, the PatchCore x 4 domains part of the grid through `anomalib benchmark`).

Tiny sizes (synthetic data, CPU widths, PatchCore on a random-weight resnet18 in a temporary offline
Hugging Face cache). Each sweep is a fresh `python -m hdmap_train --multirun` process restricted to
--cores cores. Prints the n_jobs=1 / n_jobs=2 wall-time ratio last (above 1: the parallel sweep is faster).

    .venv/bin/python bench/sweep.py [--cores 2] [--n-train 24] [--anomalib]

`anomalib benchmark` cannot run this grid at these sizes: its config has no trainer section, so DRAEM
would train for Lightning's default 1000 epochs (and download the DTD textures); PatchCore always
resizes to 256 and crops 224 (the model's pre-processor; the benchmark config cannot replace it), about
50 times the patches of a 32x96 input, which takes minutes per domain on 2 CPU cores; and its Folder
reader clips float TIFFs to 8 bits. --anomalib still runs PatchCore x 4 domains that way, for reference.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from hdmap_train.data.synthetic import SyntheticSpec, ensure_dataset
from hdmap_train.weights import write_random_weights

TINY = {  # the CPU sizes of tests/conftest.py, DRAEM for one epoch
    "draem": {"image_size": [32, 96], "batch_size": 8, "max_epochs": 1, "module": {"reconstructive_width": 8, "discriminative_width": 4}},
    "patchcore": {"image_size": [32, 96], "batch_size": 8, "module": {"backbone": "resnet18", "coreset_sampling_ratio": 0.1}},
}
DOMAINS = "A,B,C,D"


def write_tiny_models(conf: Path) -> None:
    """model=tiny_draem and model=tiny_patchcore, found through hydra.searchpath."""
    (conf / "model").mkdir(parents=True, exist_ok=True)
    for model, values in TINY.items():
        text = f"defaults:\n  - {model}\n  - _self_\n\n{OmegaConf.to_yaml(values)}"
        (conf / "model" / f"tiny_{model}.yaml").write_text(text)


def anomalib_config(root: Path) -> str:
    """`anomalib benchmark` config: PatchCore (same backbone and coreset ratio) on the four domains."""
    domains = [str(root / f"domain_{d}") for d in DOMAINS.split(",")]
    return OmegaConf.to_yaml({
        "accelerator": "cpu",
        "benchmark": {
            "seed": 42,
            "model": {"class_path": "Patchcore", "init_args": {"backbone": "resnet18", "coreset_sampling_ratio": 0.1}},
            "data": {"class_path": "Folder", "init_args": {
                "name": "hdmap", "root": {"grid": domains}, "normal_dir": "train/good", "abnormal_dir": "test/fault",
                "normal_test_dir": "test/good", "train_batch_size": 8, "eval_batch_size": 8, "num_workers": 0,
            }},
        },
    })


def timed(command: list[str], cwd: Path) -> float:
    """Wall seconds of a command; stops the benchmark with its output if it fails."""
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=2, help="CPU cores the sweeps may use")
    parser.add_argument("--n-train", type=int, default=24, help="normal training images per domain")
    parser.add_argument("--anomalib", action="store_true", help="also run PatchCore x 4 domains through `anomalib benchmark` (slow)")
    args = parser.parse_args()
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])  # inherited by every process below
    work = Path(tempfile.mkdtemp(prefix="hdmap-sweep-bench-"))
    root = ensure_dataset(SyntheticSpec(n_train=args.n_train, n_test=12, seed=0), work / "data")
    write_tiny_models(work / "conf")
    os.environ |= {"HF_HOME": str(work / "hf"), "HF_HUB_CACHE": str(work / "hf" / "hub"), "HF_HUB_OFFLINE": "1"}
    write_random_weights("resnet18", work / "hf" / "hub")

    sweep = [sys.executable, "-m", "hdmap_train", "--multirun", "hydra/launcher=gpus", f"hydra.searchpath=[file://{work / 'conf'}]",
             "trainer=cpu", "trainer.enable_progress_bar=false", f"data.root={root}", f"domain={DOMAINS}"]
    rows = []
    sweeps = [("tiny_draem,tiny_patchcore", 1), ("tiny_draem,tiny_patchcore", 2)] + [("tiny_patchcore", 1)] * args.anomalib
    for models, n_jobs in sweeps:
        sweep_dir = work / f"sweep-{models.replace(',', '+')}-n{n_jobs}"
        seconds = timed([*sweep, f"model={models}", f"hydra.launcher.n_jobs={n_jobs}", f"hydra.sweep.dir={sweep_dir}"], work)
        jobs = pd.read_csv(sweep_dir / "summary.csv")
        rows.append({"run": f"hdmap_train n_jobs={n_jobs}", "grid": models.replace("tiny_", ""), "jobs": len(jobs),
                     "wall_s": seconds, "fit_s_per_job": jobs["fit_seconds"].mean()})
        print(f"{rows[-1]['run']:<24} {rows[-1]['grid']:<16} {seconds:7.1f} s", flush=True)
    if args.anomalib:
        (work / "anomalib.yaml").write_text(anomalib_config(root))
        anomalib = Path(sys.executable).with_name("anomalib")
        seconds = timed([str(anomalib), "benchmark", "--config", str(work / "anomalib.yaml")], work)
        results = pd.read_csv(next((work / "runs").rglob("results.csv")))
        rows.append({"run": "anomalib benchmark", "grid": "patchcore", "jobs": len(results), "wall_s": seconds,
                     "fit_s_per_job": results["fit_duration"].mean()})
    table = pd.DataFrame(rows)
    print(f"\n{args.cores} CPU cores, {args.n_train} training images per domain, work dir {work}\n")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    ratio = table["wall_s"].iloc[0] / table["wall_s"].iloc[1]
    print(f"\nwall-time ratio n_jobs=1 / n_jobs=2 (2 models x 4 domains): {ratio:.2f}")


if __name__ == "__main__":
    main()
