"""CutPaste faults for training DRAEM-style models: a patch of the image itself, scaled and ADDED elsewhere in it.

HDMAP faults add thin, mostly horizontal bright lines to the map. `CutPasteGenerator` (DRAEM-CutPaste)
imitates them: it cuts a ``cut_h x cut_w`` patch (pixels) at a random source position, multiplies it by
an amplitude ``a_fault ~ U(amplitude_range)`` (optionally after dividing it by its own max |value|, so
the amplitude is in image units rather than relative to the patch), and adds it to a target rectangle
that does not overlap the source. The mask is 1 on the target rectangle. Nothing is clamped: the
faulted image keeps values above the normal range, like real HDMAP faults.

`SeverityCutPasteGenerator` (DRAEM-SevNet) draws one set of parameters per faulted image, used for
all `patch_count` patches:

- width ~ U{patch_width_range} (pixels);
- ratio ~ U(patch_ratio_range), where **ratio = width / height**: ratio > 1 is a landscape (wide)
  patch, ratio < 1 a portrait (tall) one; height = max(1, round(width / ratio)), at most image height - 1;
- severity ~ U(0, severity_max);
- signature = patch / max|patch| x severity, ADDED to a target rectangle that does not overlap the
  patch's source; the mask is 1 there and the image's severity label is the raw severity.

The seed defined the ratio the other way round (height / width, with the same (2, 4) default, i.e.
tall patches) and its patch report called them landscape. Here the (2, 4) default gives wide patches,
like HDMAP's horizontal line faults; the seed's tall patches are patch_ratio_range=[0.25, 0.5].
Clean images are returned untouched (label 0) and nothing is clamped, faulted or not.

Every image of the batch is faulted at once, on the batch's device, with no host synchronisation:
per-image sizes, amplitudes and positions are tensors; the target position is drawn uniformly among
all positions whose rectangle does not overlap the source (counted exactly over the position grid,
no rejection loop), patches are copied by gather, masks come from coordinate comparisons.

All randomness comes from torch's generator of the images' device, so a caller can make it
reproducible with ``torch.manual_seed`` (validation does, inside ``torch.random.fork_rng``).
"""

from collections.abc import Sequence
from typing import NamedTuple

import torch

from hdmap_train.errors import HdmapError


class SyntheticFaults(NamedTuple):
    """Output of a generator, one entry per image."""

    images: torch.Tensor  # (B, C, H, W) faulted copies; clean images are returned unchanged
    masks: torch.Tensor  # (B, 1, H, W) 1 on the fault region, 0 elsewhere
    labels: torch.Tensor  # (B,) 1.0 faulted, 0.0 clean
    amplitudes: torch.Tensor  # (B,) the a_fault (severity) applied; 0.0 for clean images


def checked_range(name: str, values: Sequence[float], integer: bool, low: float) -> tuple:
    """(lo, hi) checked: two numbers, lo <= hi, lo >= low."""
    values = tuple(values)
    kind = int if integer else float
    if len(values) != 2 or values[0] > values[1] or values[0] < low or any(kind(v) != v for v in values):
        what = "integers" if integer else "numbers"
        msg = f"{name}={list(values)} must be [lo, hi] with lo <= hi, both {what} >= {low}."
        raise HdmapError(msg)
    return kind(values[0]), kind(values[1])


def uniform_ints(lo: torch.Tensor | int, hi: torch.Tensor | int, size: int, device: torch.device) -> torch.Tensor:
    """(size,) uniform integers in [lo, hi] (inclusive, per element when tensors) from the device's generator."""
    return (lo + torch.floor(torch.rand(size, device=device, dtype=torch.float64) * (hi - lo + 1))).long()


def uniforms(lo: float, hi: float, size: int, device: torch.device) -> torch.Tensor:
    """(size,) uniform floats in [lo, hi) from the device's generator."""
    return lo + (hi - lo) * torch.rand(size, device=device, dtype=torch.float64)


class CutPasteGenerator:
    """Additive CutPaste fault generator (DRAEM-CutPaste)."""

    def __init__(
        self,
        cut_w_range: Sequence[int] = (2, 127),
        cut_h_range: Sequence[int] = (4, 8),
        amplitude_range: Sequence[float] = (0.0, 1.0),
        probability: float = 0.5,
        normalize_patch: bool = False,
        patch_count: int = 1,
        key_prefix: str = "model.module",
    ) -> None:
        """Check and keep the fault parameters.

        Args:
            cut_w_range: patch width range in pixels [lo, hi] (inclusive).
            cut_h_range: patch height range in pixels [lo, hi] (inclusive).
            amplitude_range: fault amplitude a_fault ~ U(lo, hi).
            probability: chance that an image gets a fault (training); validation chooses the images itself.
            normalize_patch: divide the patch by its max |value| before scaling (amplitude in image units).
            patch_count: patches per faulted image (same size and amplitude, each from its own source).
            key_prefix: config path used in error messages (e.g. "model.module").
        """
        self.key_prefix = key_prefix
        self.cut_w_range = checked_range(f"{key_prefix}.cut_w_range", cut_w_range, integer=True, low=1)
        self.cut_h_range = checked_range(f"{key_prefix}.cut_h_range", cut_h_range, integer=True, low=1)
        self.amplitude_range = checked_range(f"{key_prefix}.amplitude_range", amplitude_range, integer=False, low=0.0)
        if not 0.0 <= probability <= 1.0:
            raise HdmapError(f"{key_prefix}.probability={probability} must lie in [0, 1].")
        self.probability = probability
        self.normalize_patch = normalize_patch
        if not (isinstance(patch_count, int) and patch_count >= 1):
            raise HdmapError(f"{key_prefix}.patch_count={patch_count} must be a positive integer.")
        self.patch_count = patch_count

    def check_image_size(self, height: int, width: int) -> None:
        """Patches must be smaller than the image (so a different target position exists)."""
        if self.cut_w_range[1] >= width or self.cut_h_range[1] >= height:
            msg = (
                f"CutPaste patches up to {self.cut_h_range[1]}x{self.cut_w_range[1]} (h x w) do not fit images of "
                f"{height}x{width}: set {self.key_prefix}.cut_h_range below {height} and "
                f"{self.key_prefix}.cut_w_range below {width} (or raise model.image_size)."
            )
            raise HdmapError(msg)

    def patch_sizes(self, batch: int, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(heights, widths) (B,) of the patches for images of height x width."""
        del height, width
        return uniform_ints(*self.cut_h_range, batch, device), uniform_ints(*self.cut_w_range, batch, device)

    def __call__(self, images: torch.Tensor, faulted: torch.Tensor | None = None) -> SyntheticFaults:
        """Add one fault to each selected image of a (B, C, H, W) batch.

        faulted: (B,) bool, which images get a fault; None draws each with `probability`.
        """
        batch, channels, height, width = images.shape
        self.check_image_size(height, width)
        device = images.device
        if faulted is None:
            faulted = torch.rand(batch, device=device) < self.probability
        faulted = faulted.to(device=device, dtype=torch.bool)
        h, w = self.patch_sizes(batch, height, width, device)
        amplitudes = torch.where(faulted, uniforms(*self.amplitude_range, batch, device), 0.0).to(images.dtype)
        rows = torch.arange(height, device=device).view(1, height, 1)
        cols = torch.arange(width, device=device).view(1, 1, width)
        hh, ww = h.view(-1, 1, 1), w.view(-1, 1, 1)
        flat = images.reshape(batch, channels, height * width)
        added = torch.zeros_like(images)
        masks = torch.zeros(batch, 1, height, width, dtype=torch.bool, device=device)
        for _ in range(self.patch_count):
            src_top, src_left = uniform_ints(0, height - h, batch, device), uniform_ints(0, width - w, batch, device)
            top, left = target_positions(height, width, h, w, src_top, src_left)
            top, left, st, sl = (t.view(-1, 1, 1) for t in (top, left, src_top, src_left))
            target = (rows >= top) & (rows < top + hh) & (cols >= left) & (cols < left + ww)  # (B, H, W)
            source = (rows >= st) & (rows < st + hh) & (cols >= sl) & (cols < sl + ww)
            index = ((rows - top + st).clamp(0, height - 1) * width + (cols - left + sl).clamp(0, width - 1)).view(batch, 1, -1)
            patch = flat.gather(2, index.expand(batch, channels, -1)).view_as(images)
            if self.normalize_patch:
                peak = torch.where(source.unsqueeze(1), images.abs(), 0).amax(dim=(1, 2, 3), keepdim=True)
                patch = patch / peak.clamp_min(torch.finfo(images.dtype).tiny)
            target = target.unsqueeze(1) & faulted.view(-1, 1, 1, 1)
            added = added + torch.where(target, amplitudes.view(-1, 1, 1, 1) * patch, 0)
            masks |= target
        return SyntheticFaults(images + added, masks.to(images.dtype), faulted.to(images.dtype), amplitudes)


def target_positions(
    height: int, width: int, h: torch.Tensor, w: torch.Tensor, src_top: torch.Tensor, src_left: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (B,), a uniform top-left corner of an h x w rectangle not overlapping the one at the source.

    Counted exactly over the grid of positions (no rejection loop). If the patch is so large that every
    position overlaps, any position other than the source is used (and the source itself only when
    the patch fills the image, which check_image_size forbids).
    """
    batch, device = len(h), h.device
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)
    hh, ww, st, sl = (t.view(-1, 1, 1) for t in (h, w, src_top, src_left))
    fits = (rows <= height - hh) & (cols <= width - ww)
    apart = (rows + hh <= st) | (rows >= st + hh) | (cols + ww <= sl) | (cols >= sl + ww)
    allowed = fits & apart
    fallback = fits & ~((rows == st) & (cols == sl))
    fallback = torch.where(fallback.flatten(1).any(1).view(-1, 1, 1), fallback, fits)
    allowed = torch.where(allowed.flatten(1).any(1).view(-1, 1, 1), allowed, fallback).flatten(1)
    counts = allowed.cumsum(1)
    pick = torch.floor(torch.rand(batch, device=device, dtype=torch.float64) * counts[:, -1]).long()
    position = (counts <= pick.view(-1, 1)).sum(1)  # the (pick + 1)-th allowed position
    return position // width, position % width


def target_position(height: int, width: int, h: int, w: int, source: tuple[int, int]) -> tuple[int, int]:
    """target_positions for one rectangle (a convenience for tests and callers outside the hot path)."""
    one = torch.tensor
    top, left = target_positions(height, width, one([h]), one([w]), one([source[0]]), one([source[1]]))
    return int(top), int(left)


class SeverityCutPasteGenerator(CutPasteGenerator):
    """CutPasteGenerator with the patch shape given by width and aspect ratio and a severity amplitude (DRAEM-SevNet)."""

    def __init__(
        self,
        patch_width_range: Sequence[int] = (20, 80),
        patch_ratio_range: Sequence[float] = (2.0, 4.0),
        severity_max: float = 1.0,
        patch_count: int = 1,
        probability: float = 0.5,
        key_prefix: str = "model.module",
    ) -> None:
        """Check and keep the fault parameters (patches are always normalised: severity is in image units).

        Args:
            patch_width_range: patch width range in pixels [lo, hi] (inclusive); must stay below the image width.
            patch_ratio_range: width / height range (> 1 landscape, < 1 portrait), both positive.
            severity_max: severity ~ U(0, severity_max), the amplitude of the normalised patch.
            patch_count: patches per faulted image (same size and severity, each from its own source).
            probability: chance that an image gets a fault (training); validation chooses the images itself.
            key_prefix: config path used in error messages (e.g. "model.module").
        """
        if not severity_max > 0:
            raise HdmapError(f"{key_prefix}.severity_max={severity_max} must be positive.")
        super().__init__(
            cut_w_range=checked_range(f"{key_prefix}.patch_width_range", patch_width_range, integer=True, low=1),
            cut_h_range=(1, 1),
            amplitude_range=(0.0, severity_max),
            probability=probability,
            normalize_patch=True,
            patch_count=patch_count,
            key_prefix=key_prefix,
        )
        self.ratio_range = checked_range(f"{key_prefix}.patch_ratio_range", patch_ratio_range, integer=False, low=0.0)
        if self.ratio_range[0] <= 0:
            raise HdmapError(f"{key_prefix}.patch_ratio_range={list(patch_ratio_range)} must be positive (width / height).")
        self.severity_max = severity_max

    def check_image_size(self, height: int, width: int) -> None:
        """The widest patch must be narrower than the image (heights are capped at height - 1)."""
        if self.cut_w_range[1] >= width or height < 2:
            msg = (
                f"Patch widths up to {self.cut_w_range[1]} do not fit images of {height}x{width}: set "
                f"{self.key_prefix}.patch_width_range below {width} (or raise model.image_size)."
            )
            raise HdmapError(msg)

    def patch_sizes(self, batch: int, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(heights, widths) (B,): width drawn first, height from the aspect ratio."""
        del width
        patch_width = uniform_ints(*self.cut_w_range, batch, device)
        ratio = uniforms(*self.ratio_range, batch, device)
        return torch.round(patch_width / ratio).long().clamp(1, height - 1), patch_width
