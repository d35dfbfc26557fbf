"""PatchCore fit time split into feature extraction, coreset selection and memory-bank build, with
anomalib's k-center greedy and hdmap_train's blocked one (model.module.coreset_sampler), at the seed's
coreset ratios 0.01 and 0.1.

The default model config (conf/model/patchcore.yaml: wide_resnet50_2, layers 2+3, 224x224) on the
synthetic dataset, with random backbone weights in a temporary offline Hugging Face cache (speed does not
depend on the values; AUROC does, so it only compares the two samplers). Patch features are extracted once;
each (ratio, sampler) then builds a memory bank from the same embeddings with the same seed and scores the
source test set (AUROC). Each selection runs --repeats times, alternating samplers; the fastest counts.
"RSS +MB" is the growth of resident memory during a fit: anomalib's sampler allocates and frees an
N x d tensor per selected centre, which glibc's heap may fail to reuse. Prints, last, whether both
samplers built the same memory bank and the anomalib / blocked coreset-selection time ratio, per ratio.

    .venv/bin/python bench/patchcore_fit.py [--n-train 40] [--n-test 10] [--image-size 224] [--backbone wide_resnet50_2]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

WORK = Path(tempfile.mkdtemp(prefix="hdmap-patchcore-bench-"))
# before huggingface_hub is imported: it reads the cache location once
os.environ |= {"HF_HOME": str(WORK / "hf"), "HF_HUB_CACHE": str(WORK / "hf" / "hub"), "HF_HUB_OFFLINE": "1"}

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule  # noqa: E402
from hdmap_train.data.synthetic import SyntheticSpec, generate  # noqa: E402
from hdmap_train.models import build_model  # noqa: E402
from hdmap_train.models.baselines import training_branch  # noqa: E402
from hdmap_train.weights import write_random_weights  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"
SAMPLERS = ("anomalib", "blocked")


def rss_mb() -> float:
    """Resident memory of this process (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def source_auroc(model, loader) -> float:
    """Image AUROC of the fitted memory bank on the source test set."""
    scores, labels = [], []
    with torch.no_grad():
        for batch in loader:
            scores.append(model.model(model.pre_processor(batch.image)).pred_score.flatten())
            labels.append(batch.gt_label.flatten())
    return roc_auc_score(torch.cat(labels).numpy(), torch.cat(scores).numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=40, help="training images (each gives (size/8)^2 patches)")
    parser.add_argument("--n-test", type=int, default=10, help="test images per class")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="coreset selections timed per sampler (the fastest counts)")
    args = parser.parse_args()
    write_random_weights(args.backbone, WORK / "hf" / "hub")
    size = (args.image_size, args.image_size)
    with initialize_config_dir(str(CONF), version_base="1.3"):
        model_cfg = compose("train", [f"model.image_size=[{size[0]},{size[1]}]", "model=patchcore",
                                      f"model.module.backbone={args.backbone}"]).model
    root = generate(SyntheticSpec(n_train=args.n_train, n_test=args.n_test, domains=("A",)), WORK / "data")
    datamodule = MultiDomainHDMAPDataModule(root, "A", [], size, val_fraction=0.5 / args.n_train)
    datamodule.setup()
    model = build_model(model_cfg).eval()

    start = time.perf_counter()
    with torch.no_grad(), training_branch(model.model):  # what training_step does: store patch embeddings
        for batch in datamodule.train_dataloader():
            model.model(model.pre_processor(batch.image))
    extraction_s = time.perf_counter() - start
    embeddings = list(model.model.embedding_store)
    n_patches, dim = sum(len(e) for e in embeddings), embeddings[0].shape[1]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.backbone} {size[0]}x{size[1]}, "
          f"{len(datamodule.train_data)} training images -> {n_patches} patches x {dim}; "
          f"feature extraction {extraction_s:.1f} s ({len(datamodule.train_data) / extraction_s:.1f} images/s)\n")
    print(f"{'ratio':>6} {'sampler':>9} {'bank':>6} {'extract s':>10} {'coreset s':>10} {'bank s':>7} {'RSS +MB':>8} {'AUROC':>7}")
    banks, seconds = {}, {}
    for ratio in args.ratios:
        for repeat in range(args.repeats):  # alternating order (A B B A ...): machine noise hits both samplers
            for sampler in SAMPLERS if repeat % 2 == 0 else SAMPLERS[::-1]:
                model.model.embedding_store[:] = embeddings  # fit() consumes the store
                model.coreset_sampling_ratio, model.coreset_sampler = ratio, sampler
                torch.manual_seed(args.seed)
                np.random.seed(args.seed)  # anomalib's random projection also draws from numpy
                before_mb = rss_mb()
                model.fit()
                grown_mb = rss_mb() - before_mb
                phases = model.fit_phase_seconds
                seconds.setdefault((ratio, sampler), []).append(phases["coreset_selection"])
                if repeat == 0:
                    banks[ratio, sampler] = model.model.memory_bank.clone()
                    auroc = source_auroc(model, datamodule.test_dataloaders()["domain_A"])
                print(f"{ratio:6.2f} {sampler:>9} {len(model.model.memory_bank):6d} {extraction_s:10.1f} "
                      f"{phases['coreset_selection']:10.2f} {phases['memory_bank']:7.2f} {grown_mb:8.0f} {auroc:7.4f}", flush=True)
    print()
    for ratio in args.ratios:
        same = torch.equal(banks[ratio, "anomalib"], banks[ratio, "blocked"])
        ratio_s = min(seconds[ratio, "anomalib"]) / min(seconds[ratio, "blocked"])
        print(f"coreset {ratio}: same memory bank {same}; coreset-selection time ratio anomalib / blocked "
              f"(fastest of {args.repeats}): {ratio_s:.2f}")

if __name__ == "__main__":
    main()
