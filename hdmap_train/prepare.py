"""`python -m hdmap_train.prepare`: raw KRISS .mat files -> the HDMAP dataset layout + manifest.json.

For every domain, the mapping (conf/prepare/mapping/*.yaml) names a condition class and a sensor,
which select three raw files (conf/prepare.yaml `prepare.files`). Each holds `Xdata`, an H x W x 1 x N
array (MATLAB v5 via scipy, or v7.3/HDF5 via h5py); sample i is Xdata[:, :, 0, i]. Written:

    <output_root>/<name>/domain_X/train/good/{k:06d}.tiff   k-th of a seeded random choice of n_train samples
    <output_root>/<name>/domain_X/test/good/{k:06d}.tiff    sample k of the normal test file (first n_test; null: all)
    <output_root>/<name>/domain_X/test/fault/{k:06d}.tiff   sample k of the fault test file (first n_test; null: all)
    <output_root>/<name>/manifest.json                      mapping, sources (+ sha256), counts, seed,
                                                            normalisation, per-domain training statistics

as float32 single-channel TIFF at native size (normalisation `original` is bit-exact in float32). The
training choice is numpy's RandomState(seed).choice(N, n_train, replace=False), as the seed's HEAD
script made it. A file holding fewer samples than asked stops the run unless prepare.allow_fewer=true
(then all of them are written, and the default name counts what was written). The dataset is written
to a temporary folder (given a normal folder's permissions) and renamed into place; an existing
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

import hydra
import numpy as np
import tifffile
from omegaconf import DictConfig, OmegaConf

from hdmap_train.data.normalization import PixelStats
from hdmap_train.errors import HdmapError
from hdmap_train.raw_mat import CHUNK, MatSamples

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
SPLIT_DIRS = {"train": "train/good", "test_good": "test/good", "test_fault": "test/fault"}
NORMALIZATIONS = ("original", "minmax", "zscore")
MANIFEST_VERSION = 1


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
    for key in ("n_train", "n_test"):
        if cfg[key] is not None and not int(cfg[key]) >= 1:
            raise HdmapError(f"prepare.{key}={cfg[key]} must be at least 1 (or null: every sample of the file).")
    files = source_files(cfg)
    samples = {domain: {split: MatSamples(path, cfg.key) for split, path in files[domain].items()} for domain in cfg.domains}
    counts = {domain: sample_counts(cfg, domain, samples[domain]) for domain in cfg.domains}
    name = cfg.name or f"{min(c['train'] for c in counts.values())}_tiff_{cfg.normalization}"
    out = Path(cfg.output_root).expanduser() / name
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise HdmapError(f"Dataset {out} already exists. Pass prepare.overwrite=true to replace it, or set prepare.name.")
    log.info("Writing %s: mapping %s, normalisation %s, seed %d, from %s", out, cfg.mapping.name, cfg.normalization,
             int(cfg.seed), Path(cfg.raw_root).expanduser())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # a normal folder's mode: mkdtemp's 0700 locks other users out of shared storage
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
                "test": "the first n_test samples (null: all); file k = sample k",
                "n_train": cfg.n_train, "n_test": cfg.n_test, "allow_fewer": bool(cfg.allow_fewer),
            },
            "normalization": {"mode": cfg.normalization, "formula": "(x - shift) / scale, not clipped"},
            "format": {"file": "tiff", "dtype": "float32", "channels": 1, "layout": "sample i = Xdata[:, :, 0, i]"},
            "raw_root": str(Path(cfg.raw_root).expanduser()),
            "counts": {},
            "domains": {},
        }
        for number, domain in enumerate(cfg.domains, start=1):  # pop: a v5 file's samples are freed once written
            log.info("domain_%s (%d/%d): %s", domain, number, len(cfg.domains),
                     ", ".join(f"{SPLIT_DIRS[split]} {n}" for split, n in counts[domain].items()))
            manifest["domains"][domain], manifest["counts"][domain] = prepare_domain(
                cfg, domain, samples.pop(domain), counts[domain], tmp / f"domain_{domain}"
            )
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def sample_counts(cfg: DictConfig, domain: str, samples: dict[str, MatSamples]) -> dict[str, int]:
    """Samples to write per split: n_train / n_test (null: the whole file); fewer in a file raises unless allow_fewer."""
    counts = {}
    for split, mat in samples.items():
        key = "n_train" if split == "train" else "n_test"
        asked = mat.count if cfg[key] is None else int(cfg[key])
        if mat.count < asked:
            if not cfg.allow_fewer:
                msg = (
                    f"Domain {domain} {SPLIT_DIRS[split]}: {mat.path} holds {mat.count} samples, fewer than prepare.{key}={asked}. "
                    f"Ask for at most {mat.count}, or pass prepare.allow_fewer=true to write the {mat.count} there are."
                )
                raise HdmapError(msg)
            log.warning(
                "domain_%s %s: writing all %d samples of %s, fewer than prepare.%s=%d (prepare.allow_fewer=true)",
                domain, SPLIT_DIRS[split], mat.count, mat.path, key, asked,
            )
        counts[split] = min(asked, mat.count)
    return counts


def prepare_domain(cfg: DictConfig, domain: str, samples: dict[str, MatSamples], counts: dict[str, int], folder: Path) -> tuple[dict, dict]:
    """Write counts[split] samples of each split of one domain; returns its manifest entry and its sample counts."""
    entry = cfg.mapping.domains[domain]
    files = {split: mat.path for split, mat in samples.items()}
    train = samples["train"]
    log.info("domain_%s: training-file statistics over its %d samples", domain, train.count)
    stats = train.statistics()
    bounds = OmegaConf.to_container(entry.bounds) if entry.get("bounds") is not None else None
    shift, scale = affine(cfg.normalization, stats, bounds)
    if not scale > 0:
        raise HdmapError(f"{files['train']}: {cfg.normalization} scale for domain {domain} is {scale}; check the bounds.")
    chosen = {
        "train": np.random.RandomState(int(cfg.seed)).choice(train.count, counts["train"], replace=False),
        "test_good": np.arange(counts["test_good"]),
        "test_fault": np.arange(counts["test_fault"]),
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
