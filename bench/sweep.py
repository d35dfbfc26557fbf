"""Sweep wall time on CPU cores: 2 models x 4 domains through hdmap_train (hydra/launcher=gpus at n_jobs=1,
once evaluating every domain and once the source domain only (domain.targets=[]), and at n_jobs=2 unless
--no-parallel) and through `anomalib benchmark` (unless --no-anomalib), on the same data.

Tiny sizes: DRAEM (widths 8/4, one epoch) and PatchCore (resnet18 with random weights in a temporary
offline Hugging Face cache, coreset ratio 0.1), 32x96 inputs, batch 8, on the built-in synthetic
dataset written as 8-bit grey PNGs (each domain scaled by its largest pixel value, over all its
images, to 0-255), so that both tools read identical pixels (/255). Each sweep is a fresh process
restricted to --cores cores. Per run: wall seconds of the whole grid, jobs, mean fit seconds per job
and the mean source-domain image AUROC of each model; with --repeats N every sweep runs N times, one after
another in turn, and wall_s is the median. Prints last the wall-time ratios hdmap_train / anomalib
benchmark: the same work (source domain only) and the full work (every domain).

    .venv/bin/python bench/sweep.py [--cores 2] [--n-train 24] [--no-anomalib] [--no-parallel] [--repeats 1]

`anomalib benchmark` builds its models from bench/anomalib_models.py, run as anomalib's CLI with
TinyDraem and TinyPatchcore added (its config has no trainer section, cannot replace a model's
pre-processor, and imports class paths only from anomalib.models). They are hdmap_train's HDMAPDraem
and HDMAPPatchcore, the classes the hdmap_train sweep trains; same widths, input size, epochs, batch
size, seed, train/validation sizes (90/10 of train/good) and raw, unnormalised scores. What still differs:
- each anomalib job trains and tests on one domain; each hdmap_train job also evaluates the 3 other
  domains (cross-domain transfer), predicts its validation set, writes predictions.csv, plots and
  TensorBoard logs, and reloads the best checkpoint before testing; anomalib's test step instead
  writes one visualisation per test image (into the job's temporary folder). Fit seconds: anomalib
  reads the training images inside fit, hdmap_train decodes them all before it;
- anomalib runs CPU jobs one after another in one process with torch on all --cores threads, as
  hdmap_train at n_jobs=1 (its Benchmark pipeline has a ParallelRunner only for accelerator cuda with
  more than one GPU: one job per GPU); at n_jobs=2 each hdmap_train job gets half of the threads.
  Two-thread jobs slow down far more than one-thread jobs when another process takes a core;
- which 10% of train/good is held out, and the training batch order, differ (each tool's own seeded
  split and sampler), so DRAEM weights and the PatchCore memory bank are close but not identical;
- anomalib's benchmark builds each job's model before the job seeds itself, so the first job's
  (DRAEM on domain A) initial weights are unseeded and its AUROC changes from run to run.
One epoch of tiny DRAEM stays near chance in both tools; PatchCore's AUROC is the meaningful check.
"""

import argparse
import atexit
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from omegaconf import OmegaConf
from PIL import Image

from anomalib_models import BATCH_SIZE, DRAEM, DRAEM_EPOCHS, IMAGE_SIZE, PATCHCORE
from hdmap_train.data.synthetic import SyntheticSpec, ensure_dataset
from hdmap_train.weights import write_random_weights

TINY = {
    "draem": {"image_size": IMAGE_SIZE, "batch_size": BATCH_SIZE, "max_epochs": DRAEM_EPOCHS, "module": DRAEM},
    "patchcore": {"image_size": IMAGE_SIZE, "batch_size": BATCH_SIZE, "module": PATCHCORE},
}
ANOMALIB_MODELS = {"TinyDraem": "draem", "TinyPatchcore": "patchcore"}
DOMAINS = "A,B,C,D"


def write_tiny_models(conf: Path) -> None:
    """model=tiny_draem and model=tiny_patchcore, found through hydra.searchpath."""
    (conf / "model").mkdir(parents=True, exist_ok=True)
    for model, values in TINY.items():
        text = f"defaults:\n  - {model}\n  - _self_\n\n{OmegaConf.to_yaml(values)}"
        (conf / "model" / f"tiny_{model}.yaml").write_text(text)


def png_copy(tiffs: Path, pngs: Path) -> Path:
    """The float TIFF dataset as 8-bit PNGs, each domain divided by its largest value (all splits) and scaled to 0-255."""
    for domain in sorted(tiffs.glob("domain_*")):
        files = sorted(domain.rglob("*.tiff"))
        images = [tifffile.imread(file) for file in files]
        peak = max(float(image.max()) for image in images)
        for file, image in zip(files, images, strict=True):
            out = pngs / file.relative_to(tiffs).with_suffix(".png")
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(image / peak * 255).astype(np.uint8)).save(out)
    return pngs


def anomalib_config(root: Path) -> str:
    """`anomalib benchmark` config: both tiny models x the four domains, 10% of train/good held out for validation."""
    domains = [str(root / f"domain_{d}") for d in DOMAINS.split(",")]
    return OmegaConf.to_yaml({
        "accelerator": "cpu",
        "benchmark": {
            "seed": 42,
            "model": {"grid": [{"class_path": name} for name in ANOMALIB_MODELS]},
            "data": {"class_path": "Folder", "init_args": {
                "name": "hdmap", "root": {"grid": domains}, "normal_dir": "train/good", "abnormal_dir": "test/fault",
                "normal_test_dir": "test/good", "train_batch_size": BATCH_SIZE, "eval_batch_size": BATCH_SIZE,
                "num_workers": 0, "val_split_mode": "from_train", "val_split_ratio": 0.1, "seed": 42,
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


def row(run: str, seconds: float, fit_seconds: pd.Series, models: pd.Series, aurocs: pd.Series) -> dict:
    """One table row; AUROC columns: mean source-domain image AUROC per model (of the last repeat)."""
    means = aurocs.groupby(models.to_numpy()).mean()
    return {"run": run, "jobs": len(fit_seconds), "wall_s": seconds, "fit_s_per_job": fit_seconds.mean(),
            **{f"{model}_AUROC": means.get(model) for model in TINY}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=2, help="CPU cores the sweeps may use")
    parser.add_argument("--n-train", type=int, default=24, help="normal training images per domain")
    parser.add_argument("--no-anomalib", dest="anomalib", action="store_false", help="skip the `anomalib benchmark` run")
    parser.add_argument("--no-parallel", dest="parallel", action="store_false", help="skip the n_jobs=2 sweep")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each sweep, alternating; wall_s is their median")
    args = parser.parse_args()
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])  # inherited by every process below
    work = Path(tempfile.mkdtemp(prefix="hdmap-sweep-bench-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # the runs and data go with the bench
    root = png_copy(ensure_dataset(SyntheticSpec(n_train=args.n_train, n_test=12, seed=0), work / "data"), work / "png")
    write_tiny_models(work / "conf")
    os.environ |= {"HF_HOME": str(work / "hf"), "HF_HUB_CACHE": str(work / "hf" / "hub"), "HF_HUB_OFFLINE": "1"}
    write_random_weights("resnet18", work / "hf" / "hub")

    sweep = [sys.executable, "-m", "hdmap_train", "--multirun", "hydra/launcher=gpus", f"hydra.searchpath=[file://{work / 'conf'}]",
             "trainer=cpu", "trainer.enable_progress_bar=false", f"data.root={root}", f"domain={DOMAINS}", "model=tiny_draem,tiny_patchcore"]
    runs = {"hdmap_train n_jobs=1": (1, []), "hdmap_train source only": (1, ["domain.targets=[]"])}
    if args.parallel:
        runs["hdmap_train n_jobs=2"] = (2, [])
    if args.anomalib:
        (work / "anomalib.yaml").write_text(anomalib_config(root))
        anomalib_cli = [sys.executable, str(Path(__file__).with_name("anomalib_models.py")), "benchmark", "--config",
                        str(work / "anomalib.yaml")]
    seconds: dict[str, list[float]] = {}
    for repeat in range(args.repeats):  # every run once per repeat, alternating: the machine's drift hits all alike
        results = {}
        for name, (n_jobs, extra) in runs.items():
            sweep_dir = work / f"sweep-{repeat}-{n_jobs}-{len(extra)}"
            seconds.setdefault(name, []).append(
                timed([*sweep, *extra, f"hydra.launcher.n_jobs={n_jobs}", f"hydra.sweep.dir={sweep_dir}"], work))
            results[name] = pd.read_csv(sweep_dir / "summary.csv")
        if args.anomalib:
            seconds.setdefault("anomalib benchmark", []).append(timed(anomalib_cli, work))
            runs_dir = work / f"runs-{repeat}"  # the pipeline writes into work/runs: one folder per repeat
            if (work / "runs").is_dir():
                (work / "runs").rename(runs_dir)
            found = list(runs_dir.rglob("results.csv"))  # the pipeline logs failures and exits 0
            results["anomalib benchmark"] = pd.read_csv(found[0]) if found else pd.DataFrame()
            if len(results["anomalib benchmark"]) != len(results["hdmap_train n_jobs=1"]):
                sys.exit(f"anomalib benchmark finished {len(results['anomalib benchmark'])} jobs; see {runs_dir / 'pipeline.log'}")
        print(f"repeat {repeat + 1}: " + ", ".join(f"{name} {times[-1]:.1f} s" for name, times in seconds.items()), flush=True)
    rows = [row(name, statistics.median(seconds[name]), jobs["fit_seconds"], jobs["model"], jobs["source_AUROC"])
            for name, jobs in results.items() if name in runs]
    if args.anomalib:
        jobs = results["anomalib benchmark"]
        rows.append(row("anomalib benchmark", statistics.median(seconds["anomalib benchmark"]), jobs["fit_duration"],
                        jobs["model.class_path"].map(ANOMALIB_MODELS), jobs["image_AUROC"]))
    table = pd.DataFrame(rows).set_index("run", drop=False)
    print(f"\n{args.cores} CPU cores, {args.n_train} training images per domain, work dir {work}")
    print("AUROC: mean source-domain image AUROC per model (anomalib: one domain per job, no cross-domain evaluation)\n")
    print(table.to_string(index=False, formatters={"wall_s": "{:.1f}".format, "fit_s_per_job": "{:.1f}".format,
                                                   **{f"{m}_AUROC": "{:.3f}".format for m in TINY}}))
    wall = table["wall_s"]
    if args.parallel:
        print(f"\nwall-time ratio n_jobs=1 / n_jobs=2 (2 models x 4 domains): {wall['hdmap_train n_jobs=1'] / wall['hdmap_train n_jobs=2']:.2f}")
    if args.anomalib:
        anomalib = wall["anomalib benchmark"]
        print(f"\nwall-time ratio hdmap_train / anomalib benchmark (n_jobs=1, 2 models x 4 sources, median of "
              f"{args.repeats}): same work "
              f"(source domain only) {wall['hdmap_train source only'] / anomalib:.2f}, full work (every domain) "
              f"{wall['hdmap_train n_jobs=1'] / anomalib:.2f}")


if __name__ == "__main__":
    main()
