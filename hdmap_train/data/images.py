"""Reading HDMAP images without losing amplitude, and resizing them as tensors.

8-bit PNG is divided by 255, 16-bit PNG by 65535, float TIFF is kept as stored (values above 1
stay). NaN/inf and unreadable files raise HdmapError naming the file.
"""

from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image
from torch.nn import functional as F

from hdmap_train.errors import HdmapError

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff")
RESIZE_METHODS = ("nearest", "bilinear", "aspect_pad", "pad")


def read_image(path: Path) -> np.ndarray:
    """Return the image at `path` as a float32 (H, W) array, amplitude preserved."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            array = tifffile.imread(path).astype(np.float32)
        else:
            with Image.open(path) as image:
                image.load()
                array = np.asarray(image)
            array = _scale_integer_image(array, path)
    except HdmapError:
        raise
    except Exception as exc:  # PIL/tifffile raise many types for truncated or corrupt files
        msg = f"Cannot read image {path}: {exc}. Replace or delete the file (or re-run dataset preparation)."
        raise HdmapError(msg) from exc
    if array.ndim == 3:  # (H, W, C) colour or (1, H, W) stacks: HDMAP is single channel
        array = array[..., 0] if array.shape[-1] in (3, 4) else array[0]
    if array.ndim != 2:
        msg = f"Image {path} has shape {array.shape}; expected a single-channel 2-D image."
        raise HdmapError(msg)
    if not np.isfinite(array).all():
        msg = f"Image {path} contains NaN or infinite values. Fix or remove the file."
        raise HdmapError(msg)
    return array


def _scale_integer_image(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype in (np.uint16, np.int32) and array.max(initial=0) <= 65535:
        return array.astype(np.float32) / 65535.0
    if array.dtype == bool:
        return array.astype(np.float32)
    msg = f"Image {path} has unsupported pixel type {array.dtype}; use 8/16-bit PNG or float32 TIFF."
    raise HdmapError(msg)


def resize(images: torch.Tensor, size: tuple[int, int], method: str = "bilinear") -> torch.Tensor:
    """Bring a (N, C, h, w) float batch to size (H, W).

    nearest     nearest neighbour ("nearest-exact": pixel centres aligned, as PIL)
    bilinear    bilinear, antialiased when shrinking (default)
    aspect_pad  bilinear to the largest size with the image's aspect ratio, centred on a zero canvas
    pad         no resizing: centred on a zero canvas (centre-cropped where the image is larger)

    An image already at `size` is returned unchanged (bit-exact).
    """
    height, width = images.shape[-2:]
    target = (int(size[0]), int(size[1]))
    if (height, width) == target:
        return images
    if method == "nearest":
        return F.interpolate(images, size=target, mode="nearest-exact")
    if method == "bilinear":
        return F.interpolate(images, size=target, mode="bilinear", align_corners=False, antialias=True)
    if method == "aspect_pad":
        scale = min(target[0] / height, target[1] / width)
        inner = (max(1, min(target[0], round(height * scale))), max(1, min(target[1], round(width * scale))))
        return resize(resize(images, inner, "bilinear"), target, "pad")
    if method == "pad":
        pad_h, pad_w = target[0] - height, target[1] - width
        return F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    msg = f"data.resize={method} is unknown; choose one of {', '.join(RESIZE_METHODS)}."
    raise HdmapError(msg)
