"""One split of HDMAP images as an anomalib dataset, kept in memory within a byte budget.

A dataset is built from a sample table (hdmap_train.data.layout.scan_domain) and an ImagePipeline
(hdmap_train.data.images): every image is decoded once at construction (a corrupt file fails there,
naming itself). A DataLoader gets whole batches from `__getitems__`, cut from one cached tensor in one
operation, and `collate` passes them through unchanged. With a `device` (data.device_cache) the cached
tensor lives there, normalised and resized by that device, and batches are cut there.

GPU contract: every batch is single-channel, (B, 1, H, W), float32 and contiguous (a plain copy, never a
view with stride 0), so that DataLoader(pin_memory=True) can copy it into page-locked memory and the copy
to the GPU moves a third of the bytes of a 3-channel batch. Models that want 3 channels get the grey image
replicated on the batch's device, after the transfer (`MultiDomainHDMAPDataModule.on_after_batch_transfer`).
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from anomalib.data import ImageBatch, ImageItem
from anomalib.data.datasets.base.image import AnomalibDataset
from torchvision.tv_tensors import Image

from hdmap_train.data.faults import FaultInjector
from hdmap_train.data.images import ImagePipeline, check_native_sizes, read_image, read_images
from hdmap_train.errors import HdmapError


class HDMAPImageItem(ImageItem):
    """anomalib's ImageItem, also accepting single-channel images (data.channels=1)."""

    @staticmethod
    def validate_image(image: torch.Tensor) -> torch.Tensor:
        """A (1, H, W) image as a float32 tv_tensors Image; anything else as anomalib validates it."""
        if image.ndim == 3 and image.shape[0] == 1:
            return Image(image, dtype=torch.float32)
        return ImageItem.validate_image(image)


class HDMAPImageBatch(ImageBatch):
    """anomalib's ImageBatch, also accepting single-channel images (data.channels=1)."""

    item_class = HDMAPImageItem

    @staticmethod
    def validate_image(image: torch.Tensor) -> torch.Tensor:
        """A (B, 1, H, W) batch as a float32 tv_tensors Image; anything else as anomalib validates it."""
        if image.ndim == 4 and image.shape[1] == 1:
            return Image(image, dtype=torch.float32)
        return ImageBatch.validate_image(image)

    def pin_memory(self) -> "HDMAPImageBatch":
        """The batch with its image and labels in page-locked memory (what DataLoader(pin_memory=True) calls)."""
        return self.update(in_place=False, image=self.image.pin_memory(), gt_label=self.gt_label.pin_memory())


class CacheBudget:
    """The bytes left for keeping decoded images in memory (shared by every split of a datamodule)."""

    def __init__(self, limit_mb: float) -> None:
        """Start with the whole budget.

        Args:
            limit_mb: memory for decoded images, in MiB (float("inf") for no limit).
        """
        self.limit_mb = limit_mb
        self.left = float(limit_mb) * 2**20

    def take(self, nbytes: int) -> bool:
        """Reserve nbytes if they fit."""
        if nbytes > self.left:
            return False
        self.left -= nbytes
        return True


class HDMAPDataset(AnomalibDataset):
    """HDMAP images as anomalib ImageItems (or whole ImageBatches for a DataLoader).

    Images are decoded at construction (or taken from `natives`, keyed by path), faults are injected
    where samples.injected_fault is set, then the split is kept in memory as the final
    (N, 1, H, W) tensor if it fits in `budget` ("resized"), else as decoded arrays that are
    normalised and resized on access ("native"), else re-read from file on every access ("stream").
    With a `device`, the final tensor is made and kept on that device ("device"); it must fit in `budget`.
    Images and batches are single-channel; the datamodule replicates the channels on the model's device.
    """

    def __init__(
        self,
        samples: pd.DataFrame,
        pipeline: ImagePipeline,
        budget: CacheBudget | None = None,
        natives: dict[str, np.ndarray] | None = None,
        faults: FaultInjector | None = None,
        device: torch.device | None = None,
    ) -> None:
        """Decode (or take) every image of `samples` and cache the split as far as `budget` allows.

        Args:
            samples: one row per image (image_path, label_index, split, domain; optional injected_fault).
            pipeline: normalisation and resizing of decoded images.
            budget: memory shared with the other splits; None = unlimited.
            natives: already decoded images by path (train/validation share one read); the rest are read here.
            faults: the injector for the rows whose injected_fault is set.
            device: keep the split on this device, normalised and resized there (None: the CPU tiers).
        """
        super().__init__()
        self.samples = samples
        self.pipeline = pipeline
        self.faults = faults
        self.device = device
        self._paths = list(self.samples.image_path)
        self._labels = torch.tensor(self.samples.label_index.to_numpy(dtype=np.int64))
        self._faulty = self.samples.get("injected_fault", pd.Series(False, index=self.samples.index)).to_numpy(bool)
        natives = natives or {}
        missing = [path for path in self._paths if path not in natives]
        if missing:  # test splits (train/val come decoded); one warning per split if image kinds are mixed
            natives = {**natives, **read_images(missing, f"{samples.domain.iloc[0]} {samples.split.iloc[0]}")}
        images = [self._native(i, natives[path]) for i, path in enumerate(self._paths)]
        check_native_sizes(self._paths, images, pipeline.image_size, pipeline.resize, f"{samples.domain.iloc[0]} {samples.split.iloc[0]}")
        self.native_shapes = sorted({tuple(image.shape) for image in images})
        self.cache_mode, self._images = self._keep(images, budget or CacheBudget(float("inf")))

    def _native(self, index: int, image: np.ndarray | None = None) -> np.ndarray:
        """Decoded image `index` (read from its file unless given), with its injected fault if any."""
        if image is None:
            image = read_image(Path(self._paths[index]))
        return self.faults(image, index) if self._faulty[index] else image

    def _keep(self, images: list[np.ndarray], budget: CacheBudget) -> tuple[str, torch.Tensor | list | None]:
        resized_bytes = len(images) * self.pipeline.image_size[0] * self.pipeline.image_size[1] * 4
        if self.device is not None:
            if not budget.take(resized_bytes):
                split = f"{self.samples.domain.iloc[0]} {self.samples.split.iloc[0]}"
                msg = (f"data.device_cache=true: the {split} images need {resized_bytes / 2**20:.1f} MiB on {self.device}, more "
                       f"than the {max(budget.left, 0) / 2**20:.1f} MiB left of data.cache_limit_mb={budget.limit_mb}; raise "
                       "data.cache_limit_mb or set data.device_cache=false.")
                raise HdmapError(msg)
            return "device", self.pipeline(images, self.device)
        if budget.take(resized_bytes):
            return "resized", self.pipeline(images)
        if budget.take(sum(image.nbytes for image in images)):
            return "native", images
        return "stream", None

    def images(self, indices: list[int]) -> torch.Tensor:
        """The (B, 1, H, W) images of `indices`: a new contiguous tensor (see the module's GPU contract)."""
        if self.cache_mode == "device":
            return self._images[indices]  # advanced indexing: a contiguous copy
        if self.cache_mode == "resized":
            # numpy's gather: one plain copy, without torch's thread pool (slow for small copies on busy CPUs)
            return torch.from_numpy(self._images.numpy()[indices])
        natives = [self._images[i] if self.cache_mode == "native" else self._native(i) for i in indices]
        return self.pipeline(natives)

    def __getitem__(self, index: int) -> ImageItem:
        return HDMAPImageItem(image=self.images([index])[0], gt_label=self._labels[index], image_path=self._paths[index])

    def __getitems__(self, indices: list[int]) -> ImageBatch:
        """A whole batch in one tensor operation (used by DataLoader instead of per-item collation)."""
        return HDMAPImageBatch(
            image=self.images(indices),
            gt_label=self._labels[indices],
            image_path=[self._paths[i] for i in indices],
        )

    @property
    def collate_fn(self) -> Callable[[ImageBatch | list[ImageItem]], ImageBatch]:
        """Batches from __getitems__ pass through; lists of items are collated by anomalib."""
        return collate


def collate(batch: ImageBatch | list[ImageItem]) -> ImageBatch:
    """A batch from HDMAPDataset.__getitems__ unchanged; a list of items collated into an HDMAPImageBatch."""
    return batch if isinstance(batch, ImageBatch) else HDMAPImageBatch.collate(batch)
