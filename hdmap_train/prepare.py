"""`python -m hdmap_train.prepare`: raw KRISS .mat files -> the HDMAP dataset layout + manifest.json.

For every domain, the mapping (conf/prepare/mapping/*.yaml) names a condition class and a sensor,
which select three raw files (conf/prepare.yaml `prepare.files`). Each holds `Xdata`, an H x W x 1 x N
array (MATLAB v5 via scipy, or v7.3/HDF5 via h5py); sample i is Xdata[:, :, 0, i]. Written:

    <output_root>/<name>/domain_X/train/good/{k:06d}.tiff   k-th of a seeded random choice of n_train samples
    <output_root>/<name>/domain_X/test/good/{k:06d}.tiff    sample k of the normal test file (first n_test)
    <output_root>/<name>/domain_X/test/fault/{k:06d}.tiff   sample k of the fault test file (first n_test)
    <output_root>/<name>/manifest.json                      mapping, sources (+ sha256), counts, seed,
                                                            normalisation, per-domain training statistics

as float32 single-channel TIFF at native size (normalisation `original` is bit-exact in float32). The
training choice is numpy's RandomState(seed).choice(N, n_train, replace=False), as the seed's HEAD
script made it. The dataset is written to a temporary folder and renamed into place; an existing
dataset is replaced only with prepare.overwrite=true.
"""

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import h5py
import hydra
import numpy as np
import scipy.io
import tifffile
from omegaconf import DictConfig, OmegaConf

from hdmap_train.data.normalization import PixelStats
from hdmap_train.errors import HdmapError

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
SPLIT_DIRS = {"train": "train/good", "test_good": "test/good", "test_fault": "test/fault"}
NORMALIZATIONS = ("original", "minmax", "zscore")
MANIFEST_VERSION = 1
CHUNK = 4096  # samples read at a time for statistics


class MatSamples:
    """The samples of one array (H x W x 1 x N) of a MATLAB .mat file, v5 (scipy) or v7.3 (HDF5)."""

    def __init__(self, path: Path, key: str = "Xdata") -> None:
        self.path = Path(path)
        self.key = key
        self.hdf5 = h5py.is_hdf5(self.path)
        self._array: np.ndarray | None = None
        try:
            if self.hdf5:
                with h5py.File(self.path, "r") as handle:
                    if key not in handle:
                        self._missing(list(handle.keys()))
                    shape = handle[key].shape[::-1]  # HDF5 stores MATLAB arrays transposed
            else:
                contents = scipy.io.loadmat(self.path, variable_names=[key])
                if key not in contents:
                    self._missing([name for name, *_ in scipy.io.whosmat(self.path)])
                self._array = self._samples_first(contents[key])
                shape = (*self._array.shape[1:], 1, self._array.shape[0])
        except HdmapError:
            raise
        except Exception as exc:  # scipy/h5py raise many types for truncated or foreign files
            raise HdmapError(f"Cannot read {self.path}: {exc}. Replace the file (a MATLAB .mat with {key}).") from exc
        if len(shape) > 4 or (len(shape) == 4 and shape[2] != 1):
            raise HdmapError(f"{self.path}: {key} has shape {shape}; expected H x W x 1 x N (single-channel samples).")
        self.height, self.width = int(shape[0]), int(shape[1])
        self.count = int(shape[-1]) if len(shape) >= 3 else 1

    def _missing(self, found: list[str]) -> NoReturn:
        msg = f"{self.path} has no variable '{self.key}' (found: {', '.join(found) or 'nothing'}). Set prepare.key or use the KRISS HDMap files."
        raise HdmapError(msg)

    @staticmethod
    def _samples_first(array: np.ndarray) -> np.ndarray:
        """MATLAB-order (H, W[, 1][, N]) -> (N, H, W)."""
        if array.ndim == 4:
            return np.moveaxis(array[:, :, 0, :], -1, 0)
        if array.ndim == 3:
            return np.moveaxis(array, -1, 0)
        return array[None]

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Samples `indices` (in that order) as an (n, H, W) array of the file's dtype; NaN/inf raise."""
        indices = np.asarray(indices, dtype=np.int64)
        block = self._array[indices] if self._array is not None else self._read_hdf5(indices)
        bad = ~np.isfinite(block).all(axis=(1, 2))
        if bad.any():
            raise HdmapError(f"{self.path}: sample {int(indices[bad][0])} of {self.key} contains NaN or infinite values.")
        return block

    def _read_hdf5(self, indices: np.ndarray) -> np.ndarray:
        """v7.3: the dataset is the MATLAB array transposed, (N[, 1], W, H); read only `indices`."""
        order = np.argsort(indices)
        ascending = indices[order]
        with h5py.File(self.path, "r") as handle:
            data = handle[self.key]
            if data.ndim == 2:
                picked = np.asarray(data)[None][np.zeros(len(indices), dtype=np.int64)]
            elif len(ascending) and ascending[-1] - ascending[0] == len(ascending) - 1:
                picked = data[int(ascending[0]) : int(ascending[-1]) + 1]
            else:
                picked = data[ascending.tolist()]  # h5py wants increasing indices
        picked = (picked[:, 0] if picked.ndim == 4 else picked).transpose(0, 2, 1)
        block = np.empty_like(picked)
        block[order] = picked
        return block

    def statistics(self) -> PixelStats:
        """Pixel statistics of every sample in the file."""
        stats = PixelStats()
        for start in range(0, self.count, CHUNK):
            stats.add(self.read(np.arange(start, min(start + CHUNK, self.count))))
        return stats


def sha256(path: Path) -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_files(cfg: DictConfig) -> dict[str, dict[str, Path]]:
    """{domain: {split key: raw .mat path}} from the mapping; raises listing every missing file."""
    raw_root = Path(cfg.raw_root).expanduser()
    files, missing = {}, []
    for domain in cfg.domains:
        if domain not in cfg.mapping.domains:
            raise HdmapError(f"prepare.domains has {domain}, which the mapping '{cfg.mapping.name}' does not define.")
        entry = cfg.mapping.domains[domain]
        files[domain] = {
            split: raw_root / template.format(condition=entry.condition, sensor=entry.sensor)
            for split, template in cfg.files.items()
        }
        missing += [str(p) for p in files[domain].values() if not p.is_file()]
    if missing:
        msg = f"Raw files missing under prepare.raw_root={raw_root}: {', '.join(missing)}. Point prepare.raw_root at the KRISS share."
        raise HdmapError(msg)
    return files


def affine(mode: str, stats: PixelStats, bounds: list | None) -> tuple[float, float]:
    """(shift, scale) of x -> (x - shift) / scale for the preparation normalisation."""
    if mode == "original":
        return 0.0, 1.0
    if mode == "zscore":
        return stats.mean, stats.std
    low, high = (float(bounds[0]), float(bounds[1])) if bounds is not None else (stats.minimum, stats.maximum)
    return low, high - low


def write_split(samples: MatSamples, indices: np.ndarray, folder: Path, shift: float, scale: float) -> None:
    """Write samples[indices[k]] as folder/{k:06d}.tiff (float32; original mode: exact float32 cast)."""
    folder.mkdir(parents=True)
    for start in range(0, len(indices), CHUNK):
        block = samples.read(indices[start : start + CHUNK])
        if (shift, scale) != (0.0, 1.0):
            block = (block.astype(np.float64) - shift) / scale
        for k, image in enumerate(block.astype(np.float32), start=start):
            tifffile.imwrite(folder / f"{k:06d}.tiff", image, photometric="minisblack", metadata=None)


def prepare(cfg: DictConfig) -> Path:
    """Build the dataset described by the `prepare` config node; returns its folder."""
    if cfg.normalization not in NORMALIZATIONS:
        raise HdmapError(f"prepare.normalization={cfg.normalization} is unknown; choose one of {', '.join(NORMALIZATIONS)}.")
    if not (int(cfg.n_train) >= 1 and int(cfg.n_test) >= 1):
        raise HdmapError(f"prepare.n_train={cfg.n_train} and prepare.n_test={cfg.n_test} must be at least 1.")
    out = Path(cfg.output_root).expanduser() / cfg.name
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise HdmapError(f"Dataset {out} already exists. Pass prepare.overwrite=true to replace it, or set prepare.name.")
    files = source_files(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        manifest = {
            "generator": "hdmap_train.prepare",
            "version": MANIFEST_VERSION,
            "created": datetime.now().isoformat(timespec="seconds"),
            "era": cfg.mapping.name,
            "mapping": {d: {"condition": cfg.mapping.domains[d].condition, "sensor": cfg.mapping.domains[d].sensor} for d in cfg.domains},
            "seed": int(cfg.seed),
            "selection": {
                "train": "numpy.random.RandomState(seed).choice(N, n_train, replace=False); file k = sample indices[k]",
                "test": "the first n_test samples; file k = sample k",
            },
            "normalization": {"mode": cfg.normalization, "formula": "(x - shift) / scale, not clipped"},
            "format": {"file": "tiff", "dtype": "float32", "channels": 1, "layout": "sample i = Xdata[:, :, 0, i]"},
            "raw_root": str(Path(cfg.raw_root).expanduser()),
            "counts": {},
            "domains": {},
        }
        for domain in cfg.domains:
            manifest["domains"][domain], manifest["counts"][domain] = prepare_domain(cfg, domain, files[domain], tmp / f"domain_{domain}")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def prepare_domain(cfg: DictConfig, domain: str, files: dict[str, Path], folder: Path) -> tuple[dict, dict]:
    """Write one domain; returns its manifest entry and its sample counts."""
    entry = cfg.mapping.domains[domain]
    samples = {split: MatSamples(path, cfg.key) for split, path in files.items()}
    train = samples["train"]
    stats = train.statistics()
    bounds = OmegaConf.to_container(entry.bounds) if entry.get("bounds") is not None else None
    shift, scale = affine(cfg.normalization, stats, bounds)
    if not scale > 0:
        raise HdmapError(f"{files['train']}: {cfg.normalization} scale for domain {domain} is {scale}; check the bounds.")
    chosen = {
        "train": np.random.RandomState(int(cfg.seed)).choice(train.count, min(int(cfg.n_train), train.count), replace=False),
        "test_good": np.arange(min(int(cfg.n_test), samples["test_good"].count)),
        "test_fault": np.arange(min(int(cfg.n_test), samples["test_fault"].count)),
    }
    sizes = {(s.height, s.width) for s in samples.values()}
    if len(sizes) != 1:
        raise HdmapError(f"Domain {domain}: the raw files hold different image sizes {sorted(sizes)}: {list(map(str, files.values()))}.")
    for split, indices in chosen.items():
        write_split(samples[split], indices, folder / SPLIT_DIRS[split], shift, scale)
        log.info("domain_%s %s: %d of %d samples from %s", domain, SPLIT_DIRS[split], len(indices), samples[split].count, files[split])
    sources = {
        SPLIT_DIRS[split]: {
            "path": str(path), "sha256": sha256(path), "format": "v7.3 (HDF5)" if samples[split].hdf5 else "v5",
            "samples_in_file": samples[split].count, "written": len(chosen[split]),
            **({"indices": chosen[split].tolist()} if split == "train" else {}),
        }
        for split, path in files.items()
    }
    manifest = {
        "condition": entry.condition,
        "sensor": entry.sensor,
        "size": list(sizes.pop()),
        "sources": sources,
        "train_file_statistics": stats.as_dict(),
        "normalization": {"shift": shift, "scale": scale},
    }
    return manifest, {SPLIT_DIRS[split]: len(indices) for split, indices in chosen.items()}


def replace_dir(new: Path, out: Path) -> None:
    """Move `new` to `out`, replacing an existing `out` only after the new one is complete."""
    if not out.exists():
        os.rename(new, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.rename(out, old)
    os.rename(new, out)
    shutil.rmtree(old, ignore_errors=True)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="prepare")
def main(cfg: DictConfig) -> None:
    """Entry point of `python -m hdmap_train.prepare`."""
    try:
        out = prepare(cfg.prepare)
    except HdmapError as exc:
        log.error("%s", exc)
        sys.exit(1)
    log.info("Dataset written to %s (manifest.json inside). Train with data.root=%s", out, out)


if __name__ == "__main__":
    main()
