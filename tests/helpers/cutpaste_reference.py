"""The per-image CutPaste generators as they were before batching (the reference of tests/test_synthetic_anomalies.py).

They take their parameters, checks and error messages from hdmap_train.data.cutpaste (subclasses) and keep only
the old sampling: one image, one patch at a time, scalar draws from torch's global generator.
"""

import torch

from hdmap_train.data import cutpaste
from hdmap_train.data.cutpaste import SyntheticFaults


def uniform_int(lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] (inclusive) from torch's global generator."""
    return int(torch.randint(lo, hi + 1, ()).item())


def uniform(lo: float, hi: float) -> float:
    """Uniform float in [lo, hi] from torch's global generator."""
    return lo + (hi - lo) * float(torch.rand(()).item())


class CutPasteGenerator(cutpaste.CutPasteGenerator):
    """DRAEM-CutPaste's generator, sampling one image at a time."""

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


class SeverityCutPasteGenerator(cutpaste.SeverityCutPasteGenerator, CutPasteGenerator):
    """DRAEM-SevNet's generator, sampling one image at a time (its own patch shape, the reference's __call__)."""

    def patch_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the next patch: width drawn first, height from the aspect ratio."""
        del width
        patch_width = uniform_int(*self.cut_w_range)
        ratio = uniform(*self.ratio_range)
        return min(max(1, round(patch_width / ratio)), height - 1), patch_width
