"""Built-in, deterministic generator of an HDMAP-like dataset (float32 single-channel TIFFs).

Layout under the dataset root::

    domain_{A,B,C,D}/train/good/{i:06d}.tiff
    domain_X/test/good/{i:06d}.tiff     # i < n_test // 2: cold, else warm
    domain_X/test/fault/{i:06d}.tiff    # same cold/warm split
    manifest.json

A normal image is a smooth positive pattern (low-frequency sinusoids along x and y plus a
periodic "gear tooth" ridge along x) with per-pixel Gaussian noise, times a per-domain intensity
scale. A fault adds 1-3 thin horizontal bright lines. Values are never clipped from above.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tifffile

from hdmap_train.data.faults import add_line_faults
from hdmap_train.errors import HdmapError

log = logging.getLogger(__name__)

# Bump when the generated content changes, so cached datasets are regenerated.
_GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; equal specs give bit-identical datasets."""

    n_train: int = 200  # normal training images per domain
    n_test: int = 100  # images per test class (good and fault) per domain
    height: int = 31
    width: int = 95
    seed: int = 0
    fault_strength: tuple[float, float] = (0.5, 1.5)  # line amplitude, in units of the domain's normal scale
    domains: tuple[str, ...] = ("A", "B", "C", "D")

    @classmethod
    def from_options(cls, options: dict) -> SyntheticSpec:
        """The spec of a `data.synthetic` config dict (lists become tuples, so equal specs hash alike)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})


@dataclass(frozen=True)
class _Domain:
    scale: float  # intensity scale; the warm normal-train maximum is about this value
    noise: float  # per-pixel Gaussian noise std, as a fraction of scale
    tooth_period: float  # gear-tooth ridge period along x, in pixels


# Scales chosen so normal-train maxima are about A 0.32, B 1.32, C 0.087, D 0.42 (real HDMAP order).
# C has the most noise relative to its faults (which are in units of scale), so it is the hardest.
DOMAINS: dict[str, _Domain] = {
    "A": _Domain(scale=0.31, noise=0.03, tooth_period=8.0),
    "B": _Domain(scale=1.32, noise=0.02, tooth_period=6.0),
    "C": _Domain(scale=0.075, noise=0.06, tooth_period=10.0),
    "D": _Domain(scale=0.39, noise=0.04, tooth_period=7.0),
}

# Mean of the unit pattern: base + ridge amplitude * E[((1 + cos) / 2) ** 4] (sinusoids average out).
_BASE, _WAVE_AMP, _RIDGE_AMP = 0.4, 0.12, 0.3
_PATTERN_MEAN = _BASE + _RIDGE_AMP * 35 / 128
# Cold = offset + gain * warm: dynamic range 1.6x lower and mean 1.4x lower than warm.
_COLD_GAIN = 1 / 1.6
_COLD_OFFSET = _PATTERN_MEAN * (1 / 1.4 - 1 / 1.6)
_SPLITS = {"train/good": 0, "test/good": 1, "test/fault": 2}


def _rng(seed: int, domain: str, split: str, index: int) -> np.random.Generator:
    """Independent generator per image, so content does not depend on generation order."""
    return np.random.default_rng([seed, zlib.crc32(domain.encode()), _SPLITS[split], index])


def _image(rng: np.random.Generator, spec: SyntheticSpec, dom: _Domain, cold: bool, fault: bool) -> np.ndarray:
    """One image: jittered smooth pattern + noise, cold/warm transform, optional fault lines."""
    y = np.arange(spec.height, dtype=np.float64)[:, None] / spec.height
    x = np.arange(spec.width, dtype=np.float64)[None, :]
    amp = rng.uniform(0.9, 1.1, size=3)
    phase = rng.uniform(-np.pi, np.pi, size=3)
    period = dom.tooth_period * rng.uniform(0.97, 1.03)
    ridge = ((1 + np.cos(2 * np.pi * x / period + phase[2])) / 2) ** 4
    pattern = (
        _BASE
        + _WAVE_AMP * amp[0] * np.sin(2 * np.pi * y + phase[0])
        + _WAVE_AMP * amp[1] * np.sin(2 * np.pi * 2 * x / spec.width + phase[1])
        + _RIDGE_AMP * amp[2] * ridge
    )
    unit = pattern + rng.normal(0.0, dom.noise, size=(spec.height, spec.width))
    if cold:
        unit = _COLD_OFFSET + _COLD_GAIN * unit
    img = dom.scale * unit
    if fault:
        add_line_faults(img, rng, spec.fault_strength, dom.scale, rows=(1, 2), lines=(1, 3), min_length=10)
    return np.maximum(img, 0.0).astype(np.float32)


def generate(spec: SyntheticSpec, root: Path) -> Path:
    """Write the dataset under root (which must not exist yet or be empty) and return root; logs each domain."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    unknown = set(spec.domains) - DOMAINS.keys()
    if unknown:
        raise ValueError(f"unknown synthetic domains {sorted(unknown)}; known: {sorted(DOMAINS)}")
    counts: dict[str, dict[str, int]] = {}
    log.info("Generating the synthetic dataset (%d domains x %d images) into %s", len(spec.domains),
             spec.n_train + 2 * spec.n_test, root)
    for number, name in enumerate(spec.domains, start=1):
        dom = DOMAINS[name]
        sizes = {"train/good": spec.n_train, "test/good": spec.n_test, "test/fault": spec.n_test}
        for split, n in sizes.items():
            out = root / f"domain_{name}" / split
            out.mkdir(parents=True)
            for i in range(n):
                rng = _rng(spec.seed, name, split, i)
                # Training mixes cold and warm at random; test classes are cold then warm.
                cold = bool(rng.random() < 0.5) if split == "train/good" else i < n // 2
                img = _image(rng, spec, dom, cold=cold, fault=split == "test/fault")
                tifffile.imwrite(out / f"{i:06d}.tiff", img, photometric="minisblack", metadata=None)
        counts[name] = sizes
        log.info("Synthetic domain_%s written (%d/%d): %s", name, number, len(spec.domains),
                 ", ".join(f"{split} {n}" for split, n in sizes.items()))
    manifest = {
        "generator": "synthetic",
        "version": _GENERATOR_VERSION,
        "spec": asdict(spec),
        "counts": counts,
        "domains": {
            name: {**asdict(DOMAINS[name]), "noise_std": DOMAINS[name].scale * DOMAINS[name].noise}
            for name in spec.domains
        },
        "cold_warm": "test: indices < n_test // 2 are cold, the rest warm; train: random half/half",
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return root


def _spec_hash(spec: SyntheticSpec) -> str:
    """Short stable hash of the spec and the generator version."""
    payload = json.dumps({"version": _GENERATOR_VERSION, **asdict(spec)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def ensure_dataset(spec: SyntheticSpec, cache_dir: Path) -> Path:
    """Return <cache_dir>/synthetic-<short hash of spec>, generating it once.

    Generation writes into a temporary sibling directory and renames it into place (atomic), so an
    interrupted generation is never reused and concurrent processes do not corrupt each other; the
    loser of a rename race discards its copy and returns the existing one.
    """
    cache_dir = Path(cache_dir)
    final = cache_dir / f"synthetic-{_spec_hash(spec)}"
    if final.is_dir():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=cache_dir))
    try:
        generate(spec, tmp)
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def dataset_root(root: str | Path | None, synthetic: dict | None, cache_dir: str | Path | None) -> Path:
    """`root`, or the synthetic dataset of spec `synthetic`, generated once into `cache_dir` (it wins when set)."""
    if synthetic is not None:
        if cache_dir is None:
            raise HdmapError("data.synthetic needs data.cache_dir (default ${paths.cache_dir}) to generate into.")
        return ensure_dataset(SyntheticSpec.from_options(synthetic), Path(cache_dir))
    if not root:
        raise HdmapError("data.root is not set. Pass data.root=<dir> (or set HDMAP_ROOT), or use data=synthetic.")
    return Path(root).expanduser()
