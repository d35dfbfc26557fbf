"""Reading HDMAP images without losing amplitude, resizing them as tensors, and the pipeline between.

Values: 8-bit integers (PNG or TIFF) are divided by 255, 16-bit by 65535, bool is 0/1, float is kept
as stored (values above 1 stay). Shapes: H x W; H x W x 1 and 1 x H x W are squeezed; colour (RGB or
RGBA PNG, RGB TIFF with channels first or last) loses its alpha and becomes grey, exactly when the
channels are identical, else by ITU-R 601 luma. Stacks, volumes, 1-pixel strips, other pixel types,
NaN/inf and unreadable files raise HdmapError naming the file. `read_images` warns when one split
mixes kinds (value ranges) or converts colour. `check_native_sizes` says when a split mixes image sizes
(each is brought to the image size by data.resize) and stops where data.resize=pad would crop an image.

`ImagePipeline` brings decoded images to what a model gets: normalised (hdmap_train.data.normalization)
and resized, as one float32 tensor, CHUNK images per tensor operation, on the CPU or on another device
(data.device_cache: the decoded arrays are copied there and normalised and resized by the device).
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image
from torch.nn import functional as F

from hdmap_train.checks import RESIZE_METHODS
from hdmap_train.data.normalization import Normalizer
from hdmap_train.errors import HdmapError

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff")
log = logging.getLogger(__name__)
CHANNELS = (3, 4)  # RGB, RGBA
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601
COLOUR = " colour->grey (luminance)"
RULES = "8-bit /255, 16-bit /65535, bool 0/1, float as stored; colour: alpha dropped, grey = 0.299 R + 0.587 G + 0.114 B (ITU-R 601)"
TIFF_PHOTOMETRIC = (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.MINISWHITE, tifffile.PHOTOMETRIC.RGB)  # MINISWHITE: bool only
CHUNK = 256  # images normalised and resized per tensor operation


def read_image(path: Path) -> np.ndarray:
    """Return the image at `path` as a float32 (H, W) array, amplitude preserved."""
    return read_image_with_kind(path)[0]


def read_image_with_kind(path: Path) -> tuple[np.ndarray, str]:
    """(float32 (H, W) image, its kind: "8-bit", "16-bit", "bool" or "float", + COLOUR if converted)."""
    try:
        array, colour = _read_tiff(path) if path.suffix.lower() in (".tif", ".tiff") else _read_pil(path)
    except HdmapError:
        raise
    except Exception as exc:  # PIL/tifffile raise many types for truncated or corrupt files
        msg = f"Cannot read image {path}: {exc}. Replace or delete the file (or re-run dataset preparation)."
        raise HdmapError(msg) from exc
    array, kind = _to_float(_plane(array, colour, path), path)
    if colour:
        array, kind = _to_grey(array, kind)
    if not np.isfinite(array).all():
        msg = f"Image {path} contains NaN or infinite values. Fix or remove the file."
        raise HdmapError(msg)
    return array, kind


def read_images(paths: list, what: str) -> dict:
    """{path: read_image(path)} for every path (str or Path), with one warn_mixed_kinds for the split `what`."""
    images, kinds = {}, {}
    for path in paths:
        images[path], kinds[str(path)] = read_image_with_kind(Path(path))
    warn_mixed_kinds(kinds, what)
    return images


def check_native_sizes(paths: list, images: list[np.ndarray], image_size: tuple[int, int], method: str, what: str) -> None:
    """Stop at the first image that data.resize=pad would crop; log once when the split `what` mixes image sizes.

    Every other method brings each image to `image_size` on its own, so a mixed-size split is handled (and its
    sizes are listed in metrics.json data.native_sizes); pad keeps the pixels and centres them, so a larger image
    would lose its edges.
    """
    target = tuple(int(s) for s in image_size)
    if method == "pad":
        for path, image in zip(paths, images, strict=True):
            if image.shape[0] > target[0] or image.shape[1] > target[1]:
                raise HdmapError(f"Image {path} is {size_text(image)}, larger than data.image_size={list(target)}, and "
                                 "data.resize=pad would crop it: raise data.image_size, or choose data.resize=aspect_pad.")
    sizes: dict[tuple, list] = {}
    for path, image in zip(paths, images, strict=True):
        sizes.setdefault(image.shape, []).append(path)
    if len(sizes) > 1:
        counts = ", ".join(f"{'x'.join(map(str, shape))}: {len(files)}" for shape, files in sizes.items())
        odd = next(files[0] for files in list(sizes.values())[1:])
        log.warning("%s holds images of %d sizes (%s; the first of another size than the first image: %s); each is "
                    "brought to %dx%d by data.resize=%s.", what, len(sizes), counts, odd, *target, method)


def size_text(image: np.ndarray) -> str:
    """'HxW' of a (H, W) image."""
    return "x".join(map(str, image.shape))


def warn_mixed_kinds(kinds: dict[str, str], what: str) -> None:
    """Log one warning if the images of split `what` ({path: kind}) are of several kinds or colour was converted."""
    by_kind: dict[str, list[str]] = {}
    for path, kind in kinds.items():
        by_kind.setdefault(kind, []).append(path)
    if len(by_kind) < 2 and not any(kind.endswith(COLOUR) for kind in by_kind):
        return
    found = "; ".join(f"{kind}: {len(paths)} (e.g. {', '.join(paths[:3])})" for kind, paths in by_kind.items())
    log.warning(
        "%s mixes image kinds or converts colour: %s. Applied: %s. If the values should share one range, "
        "re-export the split as one single-channel format (e.g. float TIFF from python -m hdmap_train.prepare).",
        what, found, RULES,
    )


def _read_tiff(path: Path) -> tuple[np.ndarray, bool]:
    """TIFF pixels (RGB samples moved last) and whether they are RGB."""
    with tifffile.TiffFile(path) as tif:
        if len(tif.series) != 1:
            raise HdmapError(f"Image {path} holds {len(tif.series)} images (TIFF series); save one image per file.")
        series, photometric = tif.series[0], tif.pages[0].photometric
        if photometric not in TIFF_PHOTOMETRIC or (photometric == tifffile.PHOTOMETRIC.MINISWHITE and series.dtype != bool):
            raise HdmapError(f"Image {path} is a {photometric.name} TIFF; save it as greyscale (minisblack) or RGB.")
        array = series.asarray()
    if photometric != tifffile.PHOTOMETRIC.RGB:
        return array, False
    if array.ndim != 3:
        raise _shape_error(path, array.shape, "a stack of colour images, not one")
    if array.shape[0] in CHANNELS and array.shape[-1] in CHANNELS:
        raise _shape_error(path, array.shape, "ambiguous, its first and its last axis could both hold the colour channels")
    return np.moveaxis(array, series.axes.find("S"), -1), True  # find: -1 (already last) without an S axis


def _read_pil(path: Path) -> tuple[np.ndarray, bool]:
    """PNG (or other Pillow format) pixels, grey (H, W) or RGB(A) (H, W, 3|4), and whether they are colour."""
    with Image.open(path) as image:
        if not image.mode.startswith("I;16") and any(";16" in str(tile.args) for tile in image.tile):
            msg = f"Image {path} is a 16-bit {image.mode} PNG, which Pillow reads as 8-bit; save it as 16-bit greyscale PNG or float TIFF."
            raise HdmapError(msg)
        image.load()
        if image.mode == "LA":
            image = image.convert("L")  # alpha dropped
        elif image.mode == "P" or (len(image.getbands()) > 1 and image.mode not in ("RGB", "RGBA")):
            image = image.convert("RGB")  # palette, CMYK, YCbCr, ...: the colours they stand for
        array = np.asarray(image)
    return array, array.ndim == 3


def _plane(array: np.ndarray, colour: bool, path: Path) -> np.ndarray:
    """(H, W) grey or (H, W, 3|4) colour from the shapes an HDMAP file may have; anything else raises."""
    shape = array.shape
    if colour and not (array.ndim == 3 and shape[-1] in CHANNELS):
        raise _shape_error(path, shape, "not one RGB(A) image with 3 or 4 channels")
    if not colour and array.ndim == 3 and 1 in (shape[0], shape[-1]):
        array = array[..., 0] if shape[-1] == 1 else array[0]
    elif not colour and array.ndim != 2:
        raise _shape_error(path, shape, "a stack or volume of images, not one single-channel image")
    if min(array.shape[:2]) < 2:
        raise _shape_error(path, shape, f"{array.shape[0]}x{array.shape[1]} pixels, a 1-pixel strip that cannot be an HDMAP")
    return array


def _shape_error(path: Path, shape: tuple, problem: str) -> HdmapError:
    msg = (
        f"Image {path} has shape {shape}: {problem}. Save one 2-D H x W image per file "
        "(H x W x 1, 1 x H x W and RGB(A) also load), e.g. tifffile.imwrite(f, Xdata[:, :, 0, i])."
    )
    return HdmapError(msg)


def _to_float(array: np.ndarray, path: Path) -> tuple[np.ndarray, str]:
    """Pixels as float32 on the stated scale, and their kind."""
    if array.dtype == bool:
        return array.astype(np.float32), "bool"
    if array.dtype.kind == "u" and array.dtype.itemsize in (1, 2):
        bits = 8 * array.dtype.itemsize
        return array.astype(np.float32) / (2**bits - 1), f"{bits}-bit"
    if array.dtype.kind == "f":
        return array.astype(np.float32), "float"
    msg = f"Image {path} has unsupported pixel type {array.dtype}; use 8/16-bit unsigned integers or float (PNG or TIFF)."
    raise HdmapError(msg)


def _to_grey(array: np.ndarray, kind: str) -> tuple[np.ndarray, str]:
    """(H, W, 3|4) colour -> (H, W): alpha dropped; identical channels exactly, else ITU-R 601 luma."""
    rgb = array[..., :3]
    if (rgb == rgb[..., :1]).all():
        return np.ascontiguousarray(rgb[..., 0]), kind
    return rgb @ LUMA, kind + COLOUR


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


@dataclass(frozen=True)
class ImagePipeline:
    """Decoded (H, W) arrays -> a normalised (N, 1, *image_size) float32 tensor, CHUNK images per op.

    Args:
        image_size: (height, width) every image is brought to.
        resize: one of RESIZE_METHODS (see `resize`).
        normalizer: the domain's intensity normalisation, applied before resizing.
    """

    image_size: tuple[int, int]
    resize: str = "bilinear"
    normalizer: Normalizer = field(default_factory=Normalizer)

    def __call__(self, images: list[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
        """Normalise and resize `images` on `device` (runs of equal native shape go through together)."""
        out = torch.empty((len(images), 1, *self.image_size), dtype=torch.float32, device=device)
        start = 0
        while start < len(images):
            stop = start + 1
            while stop < len(images) and stop - start < CHUNK and images[stop].shape == images[start].shape:
                stop += 1
            batch = torch.from_numpy(np.stack(images[start:stop]))[:, None].to(device)
            out[start:stop] = resize(self.normalizer(batch), self.image_size, self.resize)
            start = stop
        return out
