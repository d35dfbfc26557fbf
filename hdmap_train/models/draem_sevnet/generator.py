"""DRAEM-SevNet's synthetic faults: CutPaste patch signatures scaled by a random severity.

For a faulted image one set of parameters is drawn and used for all `patch_count` patches:

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
"""

from collections.abc import Sequence

from hdmap_train.errors import HdmapError
from hdmap_train.models.draem_cutpaste.generator import CutPasteGenerator, checked_range, uniform, uniform_int


class SeverityCutPasteGenerator(CutPasteGenerator):
    """CutPasteGenerator with the patch shape given by width and aspect ratio and a severity amplitude."""

    def __init__(
        self,
        patch_width_range: Sequence[int] = (20, 80),
        patch_ratio_range: Sequence[float] = (2.0, 4.0),
        severity_max: float = 1.0,
        patch_count: int = 1,
        probability: float = 0.5,
        key_prefix: str = "model.module",
    ) -> None:
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
        del width
        patch_width = uniform_int(*self.cut_w_range)
        ratio = uniform(*self.ratio_range)
        return min(max(1, round(patch_width / ratio)), height - 1), patch_width
