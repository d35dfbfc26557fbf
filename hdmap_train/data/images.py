"""Reading HDMAP images without losing amplitude.

8-bit PNG is divided by 255, 16-bit PNG by 65535, float TIFF is kept as stored (values above 1
stay). NaN/inf and unreadable files raise HdmapError naming the file.
"""

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from hdmap_train.errors import HdmapError

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff")


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
