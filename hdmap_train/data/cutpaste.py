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

All randomness comes from torch's global generator, so a caller can make it reproducible with
``torch.manual_seed`` (validation does, inside ``torch.random.fork_rng``).
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


def uniform_int(lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] (inclusive) from torch's global generator."""
    return int(torch.randint(lo, hi + 1, ()).item())


def uniform(lo: float, hi: float) -> float:
    """Uniform float in [lo, hi] from torch's global generator."""
    return lo + (hi - lo) * float(torch.rand(()).item())


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

    def patch_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the next patch for an image of height x width."""
        del height, width
        return uniform_int(*self.cut_h_range), uniform_int(*self.cut_w_range)

    def amplitude(self) -> float:
        """The next fault amplitude."""
        return uniform(*self.amplitude_range)

    def __call__(self, images: torch.Tensor, faulted: torch.Tensor | None = None) -> SyntheticFaults:
        """Add one fault to each selected image of a (B, C, H, W) batch.

        faulted: (B,) bool, which images get a fault; None draws each with `probability`.
        """
        batch, _, height, width = images.shape
        self.check_image_size(height, width)
        if faulted is None:
            faulted = torch.rand(batch) < self.probability
        out = images.clone()
        masks = images.new_zeros(batch, 1, height, width)
        amplitudes = images.new_zeros(batch)
        for i in torch.nonzero(faulted.cpu()).flatten().tolist():
            h, w = self.patch_size(height, width)
            amplitudes[i] = self.amplitude()
            for _ in range(self.patch_count):
                src = (uniform_int(0, height - h), uniform_int(0, width - w))
                top, left = target_position(height, width, h, w, src)
                patch = images[i, :, src[0] : src[0] + h, src[1] : src[1] + w]
                if self.normalize_patch:
                    patch = patch / patch.abs().amax().clamp_min(torch.finfo(patch.dtype).tiny)
                out[i, :, top : top + h, left : left + w] += amplitudes[i] * patch
                masks[i, :, top : top + h, left : left + w] = 1.0
        return SyntheticFaults(out, masks, faulted.to(images.device, images.dtype), amplitudes)


def target_position(height: int, width: int, h: int, w: int, source: tuple[int, int]) -> tuple[int, int]:
    """Uniform top-left corner of an h x w rectangle not overlapping the one at `source`.

    If the patch is so large that every position overlaps, any position other than the source is
    used (and the source itself only when the patch fills the image, which check_image_size forbids).
    """
    rows, cols = torch.arange(height - h + 1), torch.arange(width - w + 1)
    row_apart = (rows + h <= source[0]) | (rows >= source[0] + h)
    col_apart = (cols + w <= source[1]) | (cols >= source[1] + w)
    allowed = row_apart[:, None] | col_apart[None, :]
    if not allowed.any():
        allowed = torch.ones_like(allowed)
        if allowed.numel() > 1:
            allowed[source] = False
    choices = torch.nonzero(allowed)
    top, left = choices[uniform_int(0, len(choices) - 1)].tolist()
    return top, left


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

    def patch_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the next patch: width drawn first, height from the aspect ratio."""
        del width
        patch_width = uniform_int(*self.cut_w_range)
        ratio = uniform(*self.ratio_range)
        return min(max(1, round(patch_width / ratio)), height - 1), patch_width
