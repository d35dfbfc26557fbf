"""Multi-domain HDMAP datamodule: train on one source domain (or the union of several), test on every domain
separately.

train      = source train/good minus the held-out part (several sources: the union of theirs)
validation = a seeded held-out fraction of source train/good, taken from each source domain separately:
             normal only (validation: normal), or with deterministic line faults injected into part of
             it (validation: synthetic_faults)
test       = test/{good,fault} of each source and target domain, one set per domain (a test image may carry a
             named subgroup, e.g. cold/warm, in a `subgroup` column)

The datamodule only builds datasets and loaders: its options are checked before (hdmap_train.checks), the folder
scan is data.layout's (default hdmap_train.data.layout.scan_domain), decoding, normalising and resizing
hdmap_train.data.images / .normalization, the in-memory splits hdmap_train.data.dataset. `build_datamodule`
instantiates it from the `data` config group; with `data.synthetic` set, the built-in dataset is generated once
into `data.cache_dir` (hdmap_train.data.synthetic) and used as the root.

On a CUDA GPU (CUDA available and `accelerator`, data.accelerator = trainer.accelerator, not cpu) the
loaders pin their batches (`pin_memory: auto`), and `device_cache: true` keeps every split on the GPU,
normalised and resized there; elsewhere device_cache keeps it on the CPU through the same code.
"""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from anomalib.data import ImageBatch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch import LightningDataModule
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from hdmap_train.data.dataset import CacheBudget, HDMAPDataset
from hdmap_train.data.faults import FaultInjector
from hdmap_train.data.images import ImagePipeline, read_images
from hdmap_train.data.layout import (
    Scan,
    domain_folder,
    scan_domain,
    split_sources,
    subgroup_coverage,
)
from hdmap_train.data.normalization import Normalizer, PixelStats, make_normalizer
from hdmap_train.data.summary import data_summary
from hdmap_train.data.synthetic import dataset_root
from hdmap_train.domains import source_domains, source_label
from hdmap_train.errors import HdmapError

log = logging.getLogger(__name__)


def on_cuda(accelerator: str) -> bool:
    """Whether a trainer with this accelerator runs on a CUDA GPU: CUDA is available and it is not cpu."""
    return torch.cuda.is_available() and accelerator != "cpu"


def build_datamodule(data_cfg: DictConfig, domain_cfg: DictConfig, seed: int) -> "MultiDomainHDMAPDataModule":
    """Instantiate the `data` config group (its `_target_`) for the domains of `domain_cfg`.

    Every key of `data` is an argument of the target; a key it does not take is named in an HdmapError.
    """
    try:
        return instantiate(
            data_cfg, source=domain_cfg.source, targets=list(domain_cfg.targets), seed=seed, _convert_="all"
        )
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, TypeError):
            raise HdmapError(f"Unknown data option: {cause}. Check the keys under data.") from cause
        if cause is not None:
            raise cause from None
        raise


class MultiDomainHDMAPDataModule(LightningDataModule):
    """Source-domain training/validation plus one test set per evaluated domain."""

    def __init__(
        self,
        root: str | Path | None,
        source: str | list[str],
        targets: list[str],
        image_size: tuple[int, int],
        val_fraction: float = 0.1,
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 0,
        cache_limit_mb: float = 2048,
        seed: int = 0,
        channels: int = 3,
        resize: str = "bilinear",
        normalization: dict | None = None,
        validation: str = "normal",
        validation_faults: dict | None = None,
        subgroups: list[dict] | None = None,
        multiprocessing_context: str | None = "fork",
        min_train_images: int = 5,
        drop_single_leftover: bool = True,
        synthetic: dict | None = None,
        cache_dir: str | Path | None = None,
        accelerator: str = "auto",
        pin_memory: bool | str = "auto",
        device_cache: bool = False,
        layout: Scan | None = None,
    ) -> None:
        """Keep the options (checked before: hdmap_train.checks.check_data); nothing is read from disk until `setup`,
        except a synthetic dataset's generation.

        Args:
            root: the dataset folder (<root>/domain_X/...); ignored when `synthetic` is set.
            source: the training domain ("A" or "domain_A"), or a list of them (trained on their union).
            targets: the other evaluated domains (no source may be among them).
            image_size: (height, width) every image is brought to, once, at load time.
            val_fraction: seeded held-out fraction of source train/good, in (0, 1).
            train_batch_size: training batch size.
            eval_batch_size: validation and test batch size.
            num_workers: DataLoader worker processes (0: load in the main process).
            cache_limit_mb: memory for decoded images of all splits together; beyond it, read from disk.
            seed: seed of the train/validation split and of the validation faults.
            channels: 3 (grey replicated, ImageNet backbones) or 1.
            resize: one of RESIZE_METHODS (hdmap_train.data.images.resize).
            normalization: {mode, stats, bounds} (hdmap_train.data.normalization); default mode none.
            validation: "normal" or "synthetic_faults" (line faults in part of the validation images).
            validation_faults: {fraction, strength, rows} of the synthetic validation faults.
            subgroups: rules naming subgroups of every test class (hdmap_train.data.layout.subgroup_names).
            multiprocessing_context: worker start method: fork, spawn, forkserver or None.
            min_train_images: fewer training images left after the hold-out stop the run.
            drop_single_leftover: drop a last training batch of exactly one image (for BatchNorm training).
            synthetic: a SyntheticSpec as a dict: generate (or reuse) that dataset and use it as the root.
            cache_dir: where synthetic datasets are generated (one folder per spec).
            accelerator: the trainer's accelerator (trainer.accelerator): decides where the model runs.
            pin_memory: "auto" (pinned when training on a CUDA GPU), true or false.
            device_cache: keep every split on the model's device (the current CUDA GPU, else the CPU),
                normalised and resized there; it must fit in cache_limit_mb and needs num_workers=0.
            layout: the folder layout, scan(root, domain, split, subgroups) -> samples (default: scan_domain, the
                HDMAP folders).
        """
        super().__init__()
        resolved_root = dataset_root(root, synthetic, cache_dir)
        sources = source_domains(source)
        self.root = resolved_root
        self.scan = layout or scan_domain
        self.sources = sources
        self.source = source_label(sources)  # domain_A, or domain_A+domain_B for several sources
        self.targets = [domain_folder(t) for t in targets]
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.val_fraction = val_fraction
        self.train_batch_size = train_batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.multiprocessing_context = multiprocessing_context
        self.cache_limit_mb = cache_limit_mb
        self.seed = seed
        self.channels = channels
        self.resize = resize
        self.normalization = {"mode": "none", "stats": "source", "bounds": None, **(normalization or {})}
        self.validation = validation
        self.validation_faults = {"fraction": 0.5, "strength": [0.5, 1.5], "rows": [1, 2], **(validation_faults or {})}
        self.subgroups = [dict(rule) for rule in subgroups or []]
        self.min_train_images = int(min_train_images)
        self.drop_single_leftover = drop_single_leftover
        self.pin_memory = (not device_cache and on_cuda(accelerator)) if pin_memory == "auto" else pin_memory
        self.cache_device = torch.device("cuda" if on_cuda(accelerator) else "cpu") if device_cache else None
        self.subgroup_warnings: list[str] = []
        self.statistics: dict[str, PixelStats] = {}
        self.normalizers: dict[str, Normalizer] = {}
        self.train_data: HDMAPDataset
        self.val_data: HDMAPDataset
        self.test_data: dict[str, HDMAPDataset] = {}

    name = "HDMAP"  # anomalib's Engine names its workspace <model>/<name>/<category>
    @property
    def category(self) -> str:
        """The source domain (the workspace's <category>)."""
        return self.source

    @property
    def domains(self) -> list[str]:
        """Evaluated domains, sources first."""
        return [*self.sources, *self.targets]

    def setup(self, stage: str | None = None) -> None:
        """Scan, split, compute training statistics, decode and cache every split once (idempotent)."""
        del stage
        if self.test_data:
            return
        if not self.root.is_dir():
            msg = f"Dataset root {self.root} does not exist. Set data.root=<dir> (or HDMAP_ROOT), or use data=synthetic."
            raise HdmapError(msg)
        train, val = split_sources(self.root, self.sources, self.val_fraction, self.seed, self.min_train_images, self.scan)
        natives = read_images(list(pd.concat([train, val]).image_path), f"{self.source} train")
        self.statistics = {self.source: PixelStats.of(natives[path] for path in train.image_path)}
        self.normalizers = {domain: self._normalizer(domain) for domain in self.domains}
        shared = self.sources[0]  # every source has the same normaliser (shared_normalization)
        budget = CacheBudget(self.cache_limit_mb)
        faults = None
        if self.validation == "synthetic_faults":
            faults = FaultInjector(
                scale=self.statistics[self.source].maximum,
                strength=tuple(self.validation_faults["strength"]),
                rows=tuple(self.validation_faults["rows"]),
                seed=self.seed,
            )
            chosen = faults.choose(len(val), float(self.validation_faults["fraction"]))
            val = val.assign(injected_fault=False)
            val.loc[chosen, ["injected_fault", "label_index"]] = [True, 1]
        self.train_data = self._dataset(train, shared, budget, natives)
        self.val_data = self._dataset(val, shared, budget, natives, faults)
        del natives
        self.test_data = {
            domain: self._dataset(self.scan(self.root, domain, "test", self.subgroups), domain, budget)
            for domain in self.domains
        }
        if not (self.root / "manifest.json").is_file():
            log.warning(
                "%s has no manifest.json: the domain mapping (which raw condition and sensor each domain_X holds) is "
                "unverified (data.mapping_verified=false in metrics.json). Prepare datasets with "
                "`python -m hdmap_train.prepare`, which records it.", self.root,
            )
        self.subgroup_warnings = [w for ds in self.test_data.values() for w in subgroup_coverage(ds.samples, self.subgroups)]
        for warning in self.subgroup_warnings:
            log.warning("%s", warning)

    def _normalizer(self, domain: str) -> Normalizer:
        """Normaliser of `domain`: fixed bounds, or statistics of the sources' (or the domain's own) training images."""
        mode, stats_from = self.normalization["mode"], self.normalization["stats"]
        if mode in ("minmax", "zscore"):
            if stats_from == "source":
                return make_normalizer(mode, domain, self.statistics[self.source])
            if domain not in self.statistics:  # a target: its own normal training images (never test images)
                files = list(self.scan(self.root, domain, "train").image_path)
                self.statistics[domain] = PixelStats.of(read_images(files, f"{domain} train").values())
            return make_normalizer(mode, domain, self.statistics[domain])
        return make_normalizer(mode, domain, bounds=self.normalization["bounds"])

    def _dataset(
        self, samples: pd.DataFrame, domain: str, budget: CacheBudget,
        natives: dict[str, np.ndarray] | None = None, faults: FaultInjector | None = None,
    ) -> HDMAPDataset:
        pipeline = ImagePipeline(self.image_size, self.resize, self.normalizers[domain])
        return HDMAPDataset(samples, pipeline, budget, natives, faults, self.cache_device)

    def drops_last_image(self) -> bool:
        """Whether training drops one image per epoch: only a last batch of exactly one, when drop_single_leftover.

        Every other training image is used (memory-bank models see all of them); a model that trains
        BatchNorm cannot take a batch of one image, so that single leftover is dropped (a different one
        each epoch, since batches are shuffled).
        """
        n = len(self.train_data)
        return self.drop_single_leftover and n > self.train_batch_size and n % self.train_batch_size == 1

    def _loader(self, dataset: HDMAPDataset, *, train: bool) -> DataLoader:
        batch_size = self.train_batch_size if train else self.eval_batch_size
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train and self.drops_last_image(),
            num_workers=workers,
            persistent_workers=workers > 0,
            multiprocessing_context=self.multiprocessing_context if workers > 0 else None,
            collate_fn=dataset.collate_fn,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_data, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_data, train=False)

    def test_dataloaders(self) -> dict[str, DataLoader]:
        """One loader per evaluated domain, source first."""
        return {domain: self._loader(dataset, train=False) for domain, dataset in self.test_data.items()}

    def predict_dataloader(self) -> list[DataLoader]:
        """What a run predicts: the validation set (for the threshold), then every test set, source first."""
        return [self.val_dataloader(), *self.test_dataloaders().values()]

    def on_after_batch_transfer(self, batch: ImageBatch, dataloader_idx: int) -> ImageBatch:
        """The batch as the model takes it, on the model's device: data.channels=3 replicates the grey channel there.

        Loaders yield single-channel batches (hdmap_train.data.dataset's GPU contract). On a CPU the three
        channels are one read-only expanded view; on another device a contiguous copy (models may write to it).
        Lightning calls this hook in every loop when the loaders come from this datamodule (fit/predict with
        datamodule=...), so hdmap_train never passes its loaders to a trainer by hand.
        """
        del dataloader_idx
        if self.channels == 1:
            return batch
        image = batch.image.expand(-1, self.channels, -1, -1)
        return batch.update(in_place=False, image=image if image.device.type == "cpu" else image.contiguous())

    def summary(self) -> dict:
        """What was loaded and how, for metrics.json (data record; hdmap_train.data.summary)."""
        return data_summary(self)
