"""PatchCore fit time split into feature extraction, coreset selection and memory-bank build, with
anomalib's k-center greedy and hdmap_train's blocked one (model.module.coreset_sampler), at the seed's
coreset ratios 0.01 and 0.1.

The default model config (conf/model/patchcore.yaml: wide_resnet50_2, layers 2+3, 224x224) on the
synthetic dataset, with random backbone weights in a temporary offline Hugging Face cache (speed does
not depend on the values; AUROC does, so it only compares the two samplers). Every fit runs in a fresh
process, as in a training run: extract the patch features, select the coreset (same seed), keep the
memory bank, score the source test set. Samplers alternate (A B B A) over --repeats fits each.
"RSS +MB" is how much resident memory the coreset selection added: anomalib's sampler allocates and
frees an N x d tensor per selected centre, which glibc's heap may fail to reuse; "peak MB" is the
process's peak. Each fit process may allocate --memory-limit-gb (RLIMIT_DATA), so that a sampler that
runs out fails with an error instead of getting the machine's OOM killer. Prints, last, whether both samplers built the same memory bank and the anomalib /
blocked coreset-selection time ratio, per coreset ratio.

    .venv/bin/python bench/patchcore_fit.py [--n-train 24] [--n-test 4] [--image-size 224] [--backbone wide_resnet50_2]
"""

import argparse
import atexit
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "conf"
SAMPLERS = ("anomalib", "blocked")


def rss_mb() -> float:
    """Resident memory of this process (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def fit_once(args: argparse.Namespace, ratio: float, sampler: str) -> dict:
    """Extract features, fit one memory bank and score the source test set, in this process."""
    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir
    from sklearn.metrics import roc_auc_score

    from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule
    from hdmap_train.models import build_model
    from hdmap_train.models.baselines import training_branch

    with initialize_config_dir(str(CONF), version_base="1.3"):
        model_cfg = compose("train", ["model=patchcore", f"model.image_size=[{args.image_size},{args.image_size}]",
                                      f"model.module.backbone={args.backbone}", f"model.module.coreset_sampler={sampler}",
                                      f"model.module.coreset_sampling_ratio={ratio}"]).model
    datamodule = MultiDomainHDMAPDataModule(args.work / "data", "A", [], tuple(model_cfg.image_size),
                                            val_fraction=0.5 / args.n_train)
    datamodule.setup()
    model = build_model(model_cfg).eval()
    torch.manual_seed(args.seed)  # the training loader's shuffle order: the same patch order in every process
    with torch.no_grad(), training_branch(model.model):  # what training_step does: store patch embeddings
        for batch in map(lambda b: datamodule.on_after_batch_transfer(b, 0), datamodule.train_dataloader()):  # 3 channels
            model.training_step(batch.update(image=model.pre_processor(batch.image)))  # timed: feature_extraction
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)  # anomalib's random projection also draws from numpy
    before_mb = rss_mb()
    try:
        model.fit()
    except RuntimeError as exc:  # e.g. DefaultCPUAllocator: not enough memory (under --memory-limit-gb)
        return {"error": str(exc).splitlines()[0][:120], "rss_grown_mb": rss_mb() - before_mb, **model.fit_phase_seconds}
    grown_mb = rss_mb() - before_mb
    scores, labels = [], []
    with torch.no_grad():
        for batch in map(lambda b: datamodule.on_after_batch_transfer(b, 0), datamodule.test_dataloaders()["domain_A"]):
            scores.append(model.model(model.pre_processor(batch.image)).pred_score.flatten())
            labels.append(batch.gt_label.flatten())
    bank = model.model.memory_bank
    return {**model.fit_phase_seconds, "rss_grown_mb": grown_mb, "bank_rows": len(bank),
            "bank_sha256": hashlib.sha256(bank.numpy().tobytes()).hexdigest(),
            "auroc": roc_auc_score(torch.cat(labels).numpy(), torch.cat(scores).numpy())}


def fit_in_fresh_process(args: argparse.Namespace, ratio: float, sampler: str) -> dict:
    """fit_once in a new Python process; adds its peak resident memory."""
    out = args.work / f"fit-{ratio}-{sampler}.json"
    command = [sys.executable, __file__, "--fit", str(ratio), sampler, "--work", str(args.work),
               *(f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k in ("n_train", "image_size", "backbone", "seed"))]
    limit = int(args.memory_limit_gb * 2**30)  # heap and anonymous mmaps (RLIMIT_DATA): fail, not swap or OOM-kill

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    with open(args.work / "fits.log", "a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, preexec_fn=limit_memory)
        _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        tail = (args.work / "fits.log").read_text().splitlines()[-20:]  # the folder goes when the bench ends
        sys.exit("\n".join([*tail, f"fit failed ({status}); the last lines of its log are above"]))
    return json.loads(out.read_text()) | {"peak_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=24, help="training images (each gives (size/8)^2 patches)")
    parser.add_argument("--n-test", type=int, default=4, help="test images per class")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="fits per sampler and ratio (the mean counts)")
    parser.add_argument("--memory-limit-gb", type=float, default=12, help="memory each fit process may allocate")
    parser.add_argument("--fit", nargs=2, metavar=("RATIO", "SAMPLER"), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fit:  # a child process: HF cache variables are set before huggingface_hub is imported
        os.environ |= {"HF_HOME": str(args.work / "hf"), "HF_HUB_CACHE": str(args.work / "hf" / "hub"), "HF_HUB_OFFLINE": "1"}
        ratio, sampler = float(args.fit[0]), args.fit[1]
        result = fit_once(args, ratio, sampler)
        (args.work / f"fit-{ratio}-{sampler}.json").write_text(json.dumps(result))
        return

    from hdmap_train.data.synthetic import SyntheticSpec, generate
    from hdmap_train.weights import write_random_weights

    args.work = Path(tempfile.mkdtemp(prefix="hdmap-patchcore-bench-"))

    atexit.register(shutil.rmtree, args.work, ignore_errors=True)  # the runs and data go with the bench
    write_random_weights(args.backbone, args.work / "hf" / "hub")
    generate(SyntheticSpec(n_train=args.n_train, n_test=args.n_test, domains=("A",)), args.work / "data")
    print(f"{args.backbone} {args.image_size}x{args.image_size}, {args.n_train} training images, one fresh process per fit\n")
    print(f"{'ratio':>6} {'sampler':>9} {'bank':>6} {'extract s':>10} {'coreset s':>10} {'bank s':>7} {'RSS +MB':>8} "
          f"{'peak MB':>8} {'AUROC':>7}")
    fits: dict[tuple[float, str], list[dict]] = {}
    for ratio in args.ratios:
        for repeat in range(args.repeats):
            for sampler in SAMPLERS if repeat % 2 == 0 else SAMPLERS[::-1]:
                fit = fit_in_fresh_process(args, ratio, sampler)
                fits.setdefault((ratio, sampler), []).append(fit)
                if "error" in fit:
                    print(f"{ratio:6.2f} {sampler:>9} failed after {fit['feature_extraction']:.1f} s of feature extraction, "
                          f"+{fit['rss_grown_mb']:.0f} MB, peak {fit['peak_mb']:.0f} MB: {fit['error']}", flush=True)
                    continue
                print(f"{ratio:6.2f} {sampler:>9} {fit['bank_rows']:6d} {fit['feature_extraction']:10.1f} "
                      f"{fit['coreset_selection']:10.2f} {fit['memory_bank']:7.2f} {fit['rss_grown_mb']:8.0f} "
                      f"{fit['peak_mb']:8.0f} {fit['auroc']:7.4f}", flush=True)
    print()
    for ratio in args.ratios:
        done = {s: [fit for fit in fits[ratio, s] if "error" not in fit] for s in SAMPLERS}
        failures = "; ".join(f"{s} failed {args.repeats - len(done[s])} of {args.repeats} fits within "
                             f"--memory-limit-gb={args.memory_limit_gb:g}" for s in SAMPLERS if len(done[s]) < args.repeats)
        if not all(done.values()):
            print(f"coreset {ratio}: {failures}")
            continue
        banks = {fit["bank_sha256"] for sampler in SAMPLERS for fit in done[sampler]}
        seconds = {s: statistics.mean(fit["coreset_selection"] for fit in done[s]) for s in SAMPLERS}
        print(f"coreset {ratio}: {failures + '; ' if failures else ''}same memory bank {len(banks) == 1}; "
              f"coreset-selection time ratio anomalib / blocked (mean of successful fits): "
              f"{seconds['anomalib'] / seconds['blocked']:.2f}")

if __name__ == "__main__":
    main()
