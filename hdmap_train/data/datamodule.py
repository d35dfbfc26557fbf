"""Multi-domain HDMAP datamodule: train on one source domain, test on every domain separately.

train      = source train/good minus the held-out part
validation = a seeded held-out fraction of source train/good (normal only; chooses checkpoint + threshold)
test       = test/{good,fault} of the source and of each target domain, one set per domain
"""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from anomalib.data import ImageItem
from anomalib.data.datasets.base.image import AnomalibDataset
from lightning.pytorch import LightningDataModule
from torch.nn import functional as F
from torch.utils.data import DataLoader

from hdmap_train.data.images import IMAGE_EXTENSIONS, read_image
from hdmap_train.errors import HdmapError

log = logging.getLogger(__name__)

SPLITS = {"train": ("good",), "test": ("good", "fault")}
LABELS = {"good": 0, "fault": 1}


def domain_folder(domain: str) -> str:
    """'A' -> 'domain_A' (already prefixed names pass through)."""
    return domain if domain.startswith("domain_") else f"domain_{domain}"


def list_images(folder: Path) -> list[Path]:
    """Sorted image files (png/tif/tiff, any case) directly in `folder`; raises if none."""
    if not folder.is_dir():
        msg = f"Folder {folder} is missing. Expected the HDMAP layout <root>/domain_X/{{train/good,test/good,test/fault}}."
        raise HdmapError(msg)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        msg = f"Split {folder} is empty: no {'/'.join(IMAGE_EXTENSIONS)} images. Add images or point data.root elsewhere."
        raise HdmapError(msg)
    return files


def scan_domain(root: Path, domain: str, split: str) -> pd.DataFrame:
    """One row per image of `split` in `domain`: image_path, label_index, split, domain, mask_path."""
    folder = root / domain_folder(domain)
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        msg = f"Domain folder {folder} is missing (found: {', '.join(found) or 'nothing'}). Check data.root and domain=."
        raise HdmapError(msg)
    rows = [
        {"image_path": str(path), "label_index": LABELS[label], "split": split, "domain": domain_folder(domain), "mask_path": ""}
        for label in SPLITS[split]
        for path in list_images(folder / split / label)
    ]
    samples = pd.DataFrame(rows)
    samples.attrs["task"] = "classification"
    return samples


def load_resized(path: str, image_size: tuple[int, int]) -> torch.Tensor:
    """Image as a (1, H, W) float32 tensor resized (bilinear) to image_size."""
    image = torch.from_numpy(read_image(Path(path)))[None]
    if tuple(image.shape[-2:]) != tuple(image_size):
        image = F.interpolate(image[None], size=tuple(image_size), mode="bilinear", align_corners=False)[0]
    return image


class HDMAPDataset(AnomalibDataset):
    """HDMAP images as anomalib ImageItems (3 identical channels), decoded once and kept in memory."""

    def __init__(self, samples: pd.DataFrame, image_size: tuple[int, int], cache_limit_mb: float) -> None:
        super().__init__()
        self.samples = samples
        self.image_size = tuple(image_size)
        self._cache: list[torch.Tensor] | None = None
        # Decode everything up front: a corrupt file fails here, naming itself, before any training.
        nbytes = len(samples) * self.image_size[0] * self.image_size[1] * 4
        images = [load_resized(path, self.image_size) for path in self.samples.image_path]
        if nbytes <= cache_limit_mb * 2**20:
            self._cache = images

    def __getitem__(self, index: int) -> ImageItem:
        row = self.samples.iloc[index]
        image = self._cache[index] if self._cache is not None else load_resized(row.image_path, self.image_size)
        return ImageItem(
            image=image.expand(3, -1, -1).clone(),
            gt_label=torch.tensor(row.label_index),
            image_path=row.image_path,
        )


class MultiDomainHDMAPDataModule(LightningDataModule):
    """Source-domain training/validation plus one test set per evaluated domain."""

    def __init__(
        self,
        root: str | Path,
        source: str,
        targets: list[str],
        image_size: tuple[int, int],
        val_fraction: float = 0.1,
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 0,
        cache_limit_mb: float = 2048,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            msg = f"data.val_fraction={val_fraction} must lie strictly between 0 and 1 (e.g. 0.1)."
            raise HdmapError(msg)
        if domain_folder(source) in {domain_folder(t) for t in targets}:
            msg = f"Target domains {list(targets)} include the source domain {source}; remove it from domain.targets."
            raise HdmapError(msg)
        self.root = Path(root)
        self.source = domain_folder(source)
        self.targets = [domain_folder(t) for t in targets]
        self.image_size = tuple(image_size)
        self.val_fraction = val_fraction
        self.train_batch_size = train_batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.cache_limit_mb = cache_limit_mb
        self.seed = seed
        self.train_data: HDMAPDataset
        self.val_data: HDMAPDataset
        self.test_data: dict[str, HDMAPDataset] = {}

    @property
    def domains(self) -> list[str]:
        """Evaluated domains, source first."""
        return [self.source, *self.targets]

    def setup(self, stage: str | None = None) -> None:
        """Scan, split and decode every split once (idempotent)."""
        del stage
        if self.test_data:
            return
        if not self.root.is_dir():
            msg = f"Dataset root {self.root} does not exist. Set data.root=<dir> (or HDMAP_ROOT), or use data=synthetic."
            raise HdmapError(msg)
        train_all = scan_domain(self.root, self.source, "train")
        order = np.random.default_rng(self.seed).permutation(len(train_all))
        n_val = max(1, round(len(train_all) * self.val_fraction))
        if n_val >= len(train_all):
            msg = f"{len(train_all)} training images in {self.source} are too few to hold out {n_val} for validation."
            raise HdmapError(msg)
        val = train_all.iloc[np.sort(order[:n_val])].reset_index(drop=True).assign(split="val")
        train = train_all.iloc[np.sort(order[n_val:])].reset_index(drop=True)
        val.attrs = train.attrs = dict(train_all.attrs)
        self.train_data = self._dataset(train)
        self.val_data = self._dataset(val)
        self.test_data = {domain: self._dataset(scan_domain(self.root, domain, "test")) for domain in self.domains}
        log.info(
            "Data %s: train %d, val %d, test %s",
            self.root, len(self.train_data), len(self.val_data),
            {d: len(ds) for d, ds in self.test_data.items()},
        )

    def _dataset(self, samples: pd.DataFrame) -> HDMAPDataset:
        return HDMAPDataset(samples, self.image_size, self.cache_limit_mb)

    def _loader(self, dataset: HDMAPDataset, *, train: bool) -> DataLoader:
        batch_size = self.train_batch_size if train else self.eval_batch_size
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train and len(dataset) > batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=dataset.collate_fn,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_data, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_data, train=False)

    def test_dataloaders(self) -> dict[str, DataLoader]:
        """One loader per evaluated domain, source first."""
        return {domain: self._loader(dataset, train=False) for domain, dataset in self.test_data.items()}

    def summary(self) -> dict:
        """Sample counts per split, for metrics.json."""
        return {
            "root": str(self.root),
            "train_samples": len(self.train_data),
            "val_samples": len(self.val_data),
            "test_samples": {d: len(ds) for d, ds in self.test_data.items()},
        }
