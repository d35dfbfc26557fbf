"""Multi-domain HDMAP datamodule: train on one source domain, test on every domain separately.

train      = source train/good minus the held-out part
validation = a seeded held-out fraction of source train/good: normal only (validation: normal), or
             with deterministic line faults injected into part of it (validation: synthetic_faults)
test       = test/{good,fault} of the source and of each target domain, one set per domain; each
             test sample may carry a named subgroup (e.g. cold/warm) in a `subgroup` column

Every image is decoded once at setup (a corrupt file fails there, naming itself), normalised
(hdmap_train.data.normalization), resized to the target size (hdmap_train.data.images.resize) and
kept in memory within `cache_limit_mb`.
"""

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from anomalib.data import ImageBatch, ImageItem
from anomalib.data.datasets.base.image import AnomalibDataset
from lightning.pytorch import LightningDataModule
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from torchvision.tv_tensors import Image

from hdmap_train.data.faults import FaultInjector
from hdmap_train.data.images import IMAGE_EXTENSIONS, RESIZE_METHODS, read_image, read_images, resize
from hdmap_train.data.normalization import Normalizer, PixelStats, check_normalization, make_normalizer
from hdmap_train.errors import HdmapError

log = logging.getLogger(__name__)

SPLITS = {"train": ("good",), "test": ("good", "fault")}
LABELS = {"good": 0, "fault": 1}
VALIDATION_MODES = ("normal", "synthetic_faults")
MP_CONTEXTS = (None, "fork", "spawn", "forkserver")
CHUNK = 256  # images normalised and resized per tensor operation
MANIFEST_KEYS = ("generator", "version", "mapping", "era", "seed", "counts", "normalization", "spec", "created")


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


def check_subgroups(rules: list[dict] | None) -> list[dict]:
    """Validate `data.subgroups`: a list of {name, and one of index: [start, stop], fraction: [a, b], pattern: regex}."""
    checked = []
    for rule in rules or []:
        kinds = [k for k in ("index", "fraction", "pattern") if rule.get(k) is not None]
        if not rule.get("name") or len(kinds) != 1:
            msg = (
                f"data.subgroups entry {rule} needs a name and exactly one of index: [start, stop], "
                "fraction: [from, to] or pattern: <regex on the file name>."
            )
            raise HdmapError(msg)
        if kinds[0] == "pattern":
            try:
                re.compile(rule["pattern"])
            except re.error as exc:
                raise HdmapError(f"data.subgroups pattern {rule['pattern']!r} is not a valid regex: {exc}.") from exc
        elif len(rule[kinds[0]]) != 2:
            raise HdmapError(f"data.subgroups {kinds[0]} {rule[kinds[0]]} must be [start, stop] (stop may be null).")
        checked.append(dict(rule))
    return checked


def subgroup_names(files: list[Path], rules: list[dict]) -> list[str]:
    """Subgroup of each file of one test class (files in sorted order); the first matching rule wins.

    index: [start, stop) of the file's position in its class folder (stop null: to the end);
    fraction: the same with positions floor(from * n) .. floor(to * n); pattern: re.search on the
    file name. Files matching no rule are "other".
    """
    n = len(files)
    names = []
    for position, path in enumerate(files):
        name = "other"
        for rule in rules:
            if rule.get("pattern") is not None:
                hit = re.search(rule["pattern"], path.name) is not None
            else:
                start, stop = rule["index"] if rule.get("index") is not None else (
                    int(np.floor(rule["fraction"][0] * n)), int(np.floor(rule["fraction"][1] * n))
                )
                hit = start <= position < (n if stop is None else stop)
            if hit:
                name = rule["name"]
                break
        names.append(name)
    return names


def scan_domain(root: Path, domain: str, split: str, subgroups: list[dict] | None = None) -> pd.DataFrame:
    """One row per image of `split` in `domain`: image_path, label_index, split, domain, mask_path
    (+ subgroup for test splits when subgroup rules are given)."""
    folder = root / domain_folder(domain)
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        msg = f"Domain folder {folder} is missing (found: {', '.join(found) or 'nothing'}). Check data.root and domain=."
        raise HdmapError(msg)
    rows = []
    for label in SPLITS[split]:
        files = list_images(folder / split / label)
        groups = subgroup_names(files, subgroups) if subgroups and split == "test" else [None] * len(files)
        for path, group in zip(files, groups, strict=True):
            row = {"image_path": str(path), "label_index": LABELS[label], "split": split, "domain": domain_folder(domain), "mask_path": ""}
            if group is not None:
                row["subgroup"] = group
            rows.append(row)
    samples = pd.DataFrame(rows).sort_values("image_path", ignore_index=True)
    samples.attrs["task"] = "classification"
    return samples


def subgroup_coverage(samples: pd.DataFrame, rules: list[dict]) -> list[str]:
    """Warnings for subgroups that come out empty or cover a whole test class of one domain (e.g. a test set
    under 500 images per class leaves the default `warm` subgroup empty)."""
    if not rules or "subgroup" not in samples:
        return []
    warnings = []
    for label, label_name in ((0, "good"), (1, "fault")):
        names = samples.loc[samples.label_index == label, "subgroup"]
        where = f"{samples.domain.iloc[0]} test/{label_name} ({len(names)} images)"
        for rule in rules:
            count = int((names == rule["name"]).sum())
            if count == 0:
                warnings.append(f"Subgroup '{rule['name']}' is empty in {where}; check data.subgroups.")
            elif count == len(names):
                warnings.append(f"Subgroup '{rule['name']}' covers the whole of {where}; check data.subgroups.")
    return warnings


def manifest_reference(root: Path) -> dict | None:
    """Path, sha256 and the identifying fields (mapping, seed, counts, ...) of <root>/manifest.json."""
    path = root / "manifest.json"
    if not path.is_file():
        return None
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise HdmapError(f"{path} is not valid JSON ({exc}); re-run `python -m hdmap_train.prepare` or remove it.") from exc
    return {"path": str(path), "sha256": hashlib.sha256(raw).hexdigest(), **{k: manifest[k] for k in MANIFEST_KEYS if k in manifest}}


class HDMAPImageItem(ImageItem):
    """anomalib's ImageItem, also accepting single-channel images (data.channels=1)."""

    @staticmethod
    def validate_image(image: torch.Tensor) -> torch.Tensor:
        if image.ndim == 3 and image.shape[0] == 1:
            return Image(image, dtype=torch.float32)
        return ImageItem.validate_image(image)


class HDMAPImageBatch(ImageBatch):
    """anomalib's ImageBatch, also accepting single-channel images (data.channels=1)."""

    item_class = HDMAPImageItem

    @staticmethod
    def validate_image(image: torch.Tensor) -> torch.Tensor:
        if image.ndim == 4 and image.shape[1] == 1:
            return Image(image, dtype=torch.float32)
        return ImageBatch.validate_image(image)


class CacheBudget:
    """The bytes left for keeping decoded images in memory (shared by every split of a datamodule)."""

    def __init__(self, limit_mb: float) -> None:
        self.left = float(limit_mb) * 2**20

    def take(self, nbytes: int) -> bool:
        """Reserve nbytes if they fit."""
        if nbytes > self.left:
            return False
        self.left -= nbytes
        return True


@dataclass(frozen=True)
class ImagePipeline:
    """Decoded (H, W) arrays -> a normalised (N, 1, *image_size) float32 tensor, CHUNK images per op."""

    image_size: tuple[int, int]
    resize: str = "bilinear"
    normalizer: Normalizer = field(default_factory=Normalizer)

    def __call__(self, images: list[np.ndarray]) -> torch.Tensor:
        out = torch.empty((len(images), 1, *self.image_size), dtype=torch.float32)
        start = 0
        while start < len(images):
            stop = start + 1
            while stop < len(images) and stop - start < CHUNK and images[stop].shape == images[start].shape:
                stop += 1
            batch = torch.from_numpy(np.stack(images[start:stop]))[:, None]
            out[start:stop] = resize(self.normalizer(batch), self.image_size, self.resize)
            start = stop
        return out


class HDMAPDataset(AnomalibDataset):
    """HDMAP images as anomalib ImageItems (or whole ImageBatches for a DataLoader).

    Images are decoded at construction (or taken from `natives`, keyed by path), faults are injected
    where samples.injected_fault is set, then the split is kept in memory as the final
    (N, 1, H, W) tensor if it fits in `budget` ("resized"), else as decoded arrays that are
    normalised and resized on access ("native"), else re-read from file on every access ("stream").
    Channels: 3 replicates the grey image (ImageNet backbones), 1 keeps it single-channel.
    """

    def __init__(
        self,
        samples: pd.DataFrame,
        pipeline: ImagePipeline,
        channels: int = 3,
        budget: CacheBudget | None = None,
        natives: dict[str, np.ndarray] | None = None,
        faults: FaultInjector | None = None,
    ) -> None:
        super().__init__()
        self.samples = samples
        self.pipeline = pipeline
        self.channels = channels
        self.faults = faults
        self._paths = list(self.samples.image_path)
        self._labels = torch.tensor(self.samples.label_index.to_numpy(dtype=np.int64))
        self._faulty = self.samples.get("injected_fault", pd.Series(False, index=self.samples.index)).to_numpy(bool)
        natives = natives or {}
        missing = [path for path in self._paths if path not in natives]
        if missing:  # test splits (train/val come decoded); one warning per split if image kinds are mixed
            natives = {**natives, **read_images(missing, f"{samples.domain.iloc[0]} {samples.split.iloc[0]}")}
        images = [self._native(i, natives[path]) for i, path in enumerate(self._paths)]
        self.native_shapes = sorted({tuple(image.shape) for image in images})
        self.cache_mode, self._images = self._keep(images, budget or CacheBudget(float("inf")))

    def _native(self, index: int, image: np.ndarray | None = None) -> np.ndarray:
        """Decoded image `index` (read from its file unless given), with its injected fault if any."""
        if image is None:
            image = read_image(Path(self._paths[index]))
        return self.faults(image, index) if self._faulty[index] else image

    def _keep(self, images: list[np.ndarray], budget: CacheBudget) -> tuple[str, torch.Tensor | list | None]:
        resized_bytes = len(images) * self.pipeline.image_size[0] * self.pipeline.image_size[1] * 4
        if budget.take(resized_bytes):
            return "resized", self.pipeline(images)
        if budget.take(sum(image.nbytes for image in images)):
            return "native", images
        return "stream", None

    def images(self, indices: list[int]) -> torch.Tensor:
        """The (B, C, H, W) images of `indices` (C = channels; 3 is a read-only expanded view)."""
        if self.cache_mode == "resized":
            # numpy's gather: one plain copy, without torch's thread pool (slow for small copies on busy CPUs)
            batch = torch.from_numpy(self._images.numpy()[indices])
        else:
            natives = [self._images[i] if self.cache_mode == "native" else self._native(i) for i in indices]
            batch = self.pipeline(natives)
        return batch.expand(-1, 3, -1, -1) if self.channels == 3 else batch

    def __getitem__(self, index: int) -> ImageItem:
        return HDMAPImageItem(image=self.images([index])[0], gt_label=self._labels[index], image_path=self._paths[index])

    def __getitems__(self, indices: list[int]) -> ImageBatch:
        """A whole batch in one tensor operation (used by DataLoader instead of per-item collation)."""
        return HDMAPImageBatch(
            image=self.images(indices),
            gt_label=self._labels[indices],
            image_path=[self._paths[i] for i in indices],
        )

    @property
    def collate_fn(self) -> Callable[[ImageBatch | list[ImageItem]], ImageBatch]:
        """Batches from __getitems__ pass through; lists of items are collated by anomalib."""
        return _collate


def _collate(batch: ImageBatch | list[ImageItem]) -> ImageBatch:
    return batch if isinstance(batch, ImageBatch) else HDMAPImageBatch.collate(batch)


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
        channels: int = 3,
        resize: str = "bilinear",
        normalization: dict | None = None,
        validation: str = "normal",
        validation_faults: dict | None = None,
        subgroups: list[dict] | None = None,
        multiprocessing_context: str | None = "fork",
        min_train_images: int = 5,
        drop_single_leftover: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            msg = f"data.val_fraction={val_fraction} must lie strictly between 0 and 1 (e.g. 0.1)."
            raise HdmapError(msg)
        if domain_folder(source) in {domain_folder(t) for t in targets}:
            msg = f"Target domains {list(targets)} include the source domain {source}; remove it from domain.targets."
            raise HdmapError(msg)
        if channels not in (1, 3):
            raise HdmapError(f"data.channels={channels} must be 3 (grey replicated, ImageNet backbones) or 1.")
        if resize not in RESIZE_METHODS:
            raise HdmapError(f"data.resize={resize} is unknown; choose one of {', '.join(RESIZE_METHODS)}.")
        if validation not in VALIDATION_MODES:
            raise HdmapError(f"data.validation={validation} is unknown; choose one of {', '.join(VALIDATION_MODES)}.")
        if multiprocessing_context not in MP_CONTEXTS:
            msg = f"data.multiprocessing_context={multiprocessing_context} must be fork, spawn, forkserver or null."
            raise HdmapError(msg)
        self.root = Path(root)
        self.source = domain_folder(source)
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
        check_normalization(self.normalization["mode"], self.normalization["stats"], self.normalization["bounds"], self.domains)
        self.validation = validation
        self.validation_faults = {"fraction": 0.5, "strength": [0.5, 1.5], "rows": [1, 2], **(validation_faults or {})}
        self.subgroups = check_subgroups(subgroups)
        self.min_train_images = int(min_train_images)
        self.drop_single_leftover = drop_single_leftover
        self.subgroup_warnings: list[str] = []
        self.statistics: dict[str, PixelStats] = {}
        self.normalizers: dict[str, Normalizer] = {}
        self.train_data: HDMAPDataset
        self.val_data: HDMAPDataset
        self.test_data: dict[str, HDMAPDataset] = {}

    @classmethod
    def from_config(cls, data: DictConfig, root: Path, source: str, targets: list[str], seed: int) -> "MultiDomainHDMAPDataModule":
        """Build from the `data` config group (every key except root and synthetic is an argument)."""
        options = OmegaConf.to_container(data, resolve=True)
        options.pop("root", None)
        options.pop("synthetic", None)
        try:
            return cls(root, source, targets, seed=seed, **options)
        except TypeError as exc:
            raise HdmapError(f"Unknown data option: {exc}. Check the keys under data.") from exc

    name = "HDMAP"

    @property
    def category(self) -> str:
        """The source domain (anomalib's Engine names its workspace <model>/<name>/<category>)."""
        return self.source

    @property
    def domains(self) -> list[str]:
        """Evaluated domains, source first."""
        return [self.source, *self.targets]

    def setup(self, stage: str | None = None) -> None:
        """Scan, split, compute training statistics, decode and cache every split once (idempotent)."""
        del stage
        if self.test_data:
            return
        if not self.root.is_dir():
            msg = f"Dataset root {self.root} does not exist. Set data.root=<dir> (or HDMAP_ROOT), or use data=synthetic."
            raise HdmapError(msg)
        train, val = self._split(scan_domain(self.root, self.source, "train"))
        natives = read_images(list(pd.concat([train, val]).image_path), f"{self.source} train")
        self.statistics = {self.source: PixelStats.of(natives[path] for path in train.image_path)}
        self.normalizers = {domain: self._normalizer(domain) for domain in self.domains}
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
        self.train_data = self._dataset(train, self.source, budget, natives)
        self.val_data = self._dataset(val, self.source, budget, natives, faults)
        del natives
        self.test_data = {
            domain: self._dataset(scan_domain(self.root, domain, "test", self.subgroups), domain, budget)
            for domain in self.domains
        }
        log.info(
            "Data %s: train %d, val %d, test %s; cache %s",
            self.root, len(self.train_data), len(self.val_data),
            {d: len(ds) for d, ds in self.test_data.items()}, self._cache_modes(),
        )
        if not (self.root / "manifest.json").is_file():
            log.warning(
                "%s has no manifest.json: the domain mapping (which raw condition and sensor each domain_X holds) is "
                "unverified (data.mapping_verified=false in metrics.json). Prepare datasets with "
                "`python -m hdmap_train.prepare`, which records it.", self.root,
            )
        self.subgroup_warnings = [w for ds in self.test_data.values() for w in subgroup_coverage(ds.samples, self.subgroups)]
        for warning in self.subgroup_warnings:
            log.warning("%s", warning)

    def _split(self, train_all: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Seeded train/validation split of the source train/good images."""
        order = np.random.default_rng(self.seed).permutation(len(train_all))
        n_val = max(1, round(len(train_all) * self.val_fraction))
        if len(train_all) - n_val < self.min_train_images:
            msg = (
                f"{self.source} train/good has {len(train_all)} images; holding out {n_val} for validation "
                f"(data.val_fraction={self.val_fraction}) leaves {len(train_all) - n_val} for training, fewer than "
                f"data.min_train_images={self.min_train_images}. Lower data.val_fraction or add training images."
            )
            raise HdmapError(msg)
        val = train_all.iloc[np.sort(order[:n_val])].reset_index(drop=True).assign(split="val")
        train = train_all.iloc[np.sort(order[n_val:])].reset_index(drop=True)
        val.attrs = train.attrs = dict(train_all.attrs)
        return train, val

    def _normalizer(self, domain: str) -> Normalizer:
        """Normaliser of `domain`: fixed bounds, or statistics of source (or the domain's own) training images."""
        mode, stats_from = self.normalization["mode"], self.normalization["stats"]
        if mode in ("minmax", "zscore"):
            if stats_from == "source":
                return make_normalizer(mode, domain, self.statistics[self.source])
            if domain not in self.statistics:  # a target: its own normal training images (never test images)
                files = list_images(self.root / domain / "train" / "good")
                self.statistics[domain] = PixelStats.of(read_images(files, f"{domain} train").values())
            return make_normalizer(mode, domain, self.statistics[domain])
        return make_normalizer(mode, domain, bounds=self.normalization["bounds"])

    def _dataset(
        self, samples: pd.DataFrame, domain: str, budget: CacheBudget,
        natives: dict[str, np.ndarray] | None = None, faults: FaultInjector | None = None,
    ) -> HDMAPDataset:
        pipeline = ImagePipeline(self.image_size, self.resize, self.normalizers[domain])
        return HDMAPDataset(samples, pipeline, self.channels, budget, natives, faults)

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
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_data, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_data, train=False)

    def test_dataloaders(self) -> dict[str, DataLoader]:
        """One loader per evaluated domain, source first."""
        return {domain: self._loader(dataset, train=False) for domain, dataset in self.test_data.items()}

    def _cache_modes(self) -> dict:
        return {"train": self.train_data.cache_mode, "val": self.val_data.cache_mode,
                "test": {d: ds.cache_mode for d, ds in self.test_data.items()}}

    def summary(self) -> dict:
        """What was loaded and how, for metrics.json (data record)."""
        datasets = [self.train_data, self.val_data, *self.test_data.values()]
        subgroups = {
            domain: {
                str(name): {"good": int((group.label_index == 0).sum()), "fault": int((group.label_index == 1).sum())}
                for name, group in ds.samples.groupby("subgroup", sort=False)
            }
            for domain, ds in self.test_data.items() if "subgroup" in ds.samples
        }
        manifest = manifest_reference(self.root)
        return {
            "root": str(self.root),
            "manifest": manifest,
            # without manifest.json nothing records which raw condition/sensor each domain_X holds
            "mapping_verified": manifest is not None,
            "train_samples": len(self.train_data),
            "train_images_per_epoch": len(self.train_data) - int(self.drops_last_image()),
            "val_samples": len(self.val_data),
            "test_samples": {d: len(ds) for d, ds in self.test_data.items()},
            "native_sizes": [list(shape) for shape in sorted({s for ds in datasets for s in ds.native_shapes})],
            "image_size": list(self.image_size),
            "resize": self.resize,
            "channels": self.channels,
            "normalization": {
                "mode": self.normalization["mode"],
                "stats": self.normalization["stats"],
                "applied": {d: n.as_dict() for d, n in self.normalizers.items()},
                "train_statistics": {d: s.as_dict() for d, s in self.statistics.items()},
            },
            "validation": {
                "mode": self.validation,
                "normal": int((self.val_data.samples.label_index == 0).sum()),
                "fault": int((self.val_data.samples.label_index == 1).sum()),
                **({"faults": self.validation_faults} if self.validation == "synthetic_faults" else {}),
            },
            "subgroups": subgroups,
            "subgroup_warnings": self.subgroup_warnings,
            "cache": {"limit_mb": self.cache_limit_mb, **self._cache_modes()},
            "num_workers": self.num_workers,
        }
