"""The baseline for bench/overhead.py: the same run written directly against anomalib's Engine.

Same data, model, epochs, seed and evaluation as `python -m hdmap_train` with the overrides in
overhead.py, but no Hydra, no metrics.json, no reports. Prints `source_auroc=<value>`.
"""

import argparse
import tempfile

import lightning as L
from anomalib.callbacks import ModelCheckpoint
from anomalib.engine import Engine
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from lightning.pytorch.callbacks import EarlyStopping
from sklearn.metrics import roc_auc_score

from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule
from hdmap_train.models.draem import HDMAPDraem


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    L.seed_everything(args.seed, workers=True)
    datamodule = MultiDomainHDMAPDataModule(
        args.root, "A", ["B", "C", "D"], (32, 96), val_fraction=0.1, train_batch_size=16, eval_batch_size=16,
        seed=args.seed,
    )
    datamodule.setup()
    model = HDMAPDraem(
        reconstructive_width=16, discriminative_width=8, learning_rate=1e-3,
        pre_processor=PreProcessor(transform=None),
        post_processor=PostProcessor(enable_normalization=False, enable_thresholding=False),
        evaluator=False, visualizer=False,
    )
    with tempfile.TemporaryDirectory() as workdir:
        checkpoint = ModelCheckpoint(dirpath=workdir, filename="best", monitor="val_loss", mode="min", save_last=True)
        engine = Engine(
            default_root_dir=workdir, logger=False, accelerator="cpu", max_epochs=args.epochs,
            callbacks=[checkpoint, EarlyStopping(monitor="val_loss", mode="min", patience=5)], enable_progress_bar=False,
        )
        engine.fit(model=model, datamodule=datamodule)
        # the datamodule's predict loaders (validation, then the test sets): its hook replicates the channels
        outputs = engine.predict(model=model, datamodule=datamodule, ckpt_path=checkpoint.best_model_path)
    source = outputs[1]
    labels = [int(label) for batch in source for label in batch.gt_label]
    scores = [float(score) for batch in source for score in batch.pred_score]
    print(f"source_auroc={roc_auc_score(labels, scores)!r}")


if __name__ == "__main__":
    main()
