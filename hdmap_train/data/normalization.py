"""Intensity normalisation of HDMAP images, chosen with `data.normalization.mode`.

    none          images as stored (default)
    minmax_fixed  (x - lo) / (hi - lo), [lo, hi] per domain from `data.normalization.bounds`
                  (the seed's HEAD preparation: lo = 0, hi = that domain's training maximum)
    minmax        (x - min) / (max - min), min and max of training images
    zscore        (x - mean) / std, one mean and std over all pixels of training images
    per_image     every image min-max scaled to [0, 1] on its own (how the v1 PNG datasets were made)

`minmax` and `zscore` take their statistics from training images only, never from validation or test
images: by default (`stats: source`) from the source domain's training split, and every domain, the
targets included, is normalised with those source numbers, so nothing about a target domain is used.
`stats: per_domain` uses each domain's own train/good images instead (the target domains' normal
training images, as the seed's per-domain preparation did). Nothing is clipped: values outside [0, 1]
(or beyond a few standard deviations) are kept.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from hdmap_train.errors import HdmapError


@dataclass
class PixelStats:
    """Running count, min, max, mean and variance of pixel values (float64, Chan's parallel update)."""

    count: int = 0
    minimum: float = float("inf")
    maximum: float = float("-inf")
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean

    def add(self, image: np.ndarray) -> None:
        """Include every pixel of `image`."""
        values = np.asarray(image, dtype=np.float64)
        n = values.size
        if n == 0:
            return
        mean = float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.count * n / total
        self.mean += delta * n / total
        self.count = total
        self.minimum = min(self.minimum, float(values.min()))
        self.maximum = max(self.maximum, float(values.max()))

    @classmethod
    def of(cls, images: Iterable[np.ndarray]) -> "PixelStats":
        """Statistics of all pixels of `images`."""
        stats = cls()
        for image in images:
            stats.add(image)
        return stats

    @property
    def std(self) -> float:
        """Population standard deviation (numpy's default, as the seed's z-score used)."""
        return float(np.sqrt(self.m2 / self.count)) if self.count else float("nan")

    def as_dict(self) -> dict:
        """JSON-ready summary."""
        return {"pixels": self.count, "min": self.minimum, "max": self.maximum, "mean": self.mean, "std": self.std}


@dataclass(frozen=True)
class Normalizer:
    """x -> (x - shift) / scale, or per-image min-max when mode is per_image."""

    mode: str = "none"
    shift: float = 0.0
    scale: float = 1.0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise a (N, C, H, W) float batch (a new tensor; the input is left alone)."""
        if self.mode == "none":
            return images
        if self.mode == "per_image":
            low = images.amin(dim=(-3, -2, -1), keepdim=True)
            span = images.amax(dim=(-3, -2, -1), keepdim=True) - low
            return (images - low) / torch.where(span > 0, span, torch.ones_like(span))
        return (images - self.shift) / self.scale

    def as_dict(self) -> dict:
        """JSON-ready description (what was applied)."""
        if self.mode in ("none", "per_image"):
            return {"mode": self.mode}
        return {"mode": self.mode, "shift": self.shift, "scale": self.scale}


def fixed_bounds(bounds: dict | None, domain: str) -> tuple[float, float] | None:
    """The configured [min, max] of `domain` ('domain_A' or 'A' keys), or None."""
    if not bounds:
        return None
    pair = bounds.get(domain, bounds.get(domain.removeprefix("domain_")))
    return None if pair is None else (float(pair[0]), float(pair[1]))


def make_normalizer(mode: str, domain: str, stats: PixelStats | None = None, bounds: dict | None = None) -> Normalizer:
    """The normaliser of `domain` for `mode`, from training statistics or the fixed bounds."""
    if mode in ("none", "per_image"):
        return Normalizer(mode)
    if mode == "minmax_fixed":
        low, high = fixed_bounds(bounds, domain)
        return Normalizer(mode, low, high - low)
    if stats is None or stats.count == 0:
        raise HdmapError(f"No training images to compute {mode} statistics for {domain}.")
    shift, scale = (stats.minimum, stats.maximum - stats.minimum) if mode == "minmax" else (stats.mean, stats.std)
    if not scale > 0:
        msg = (
            f"The training images of {domain} are constant ({stats.as_dict()}); {mode} normalisation is undefined. "
            "Use data.normalization.mode=none."
        )
        raise HdmapError(msg)
    return Normalizer(mode, shift, scale)
