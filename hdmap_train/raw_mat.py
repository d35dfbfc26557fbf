"""The raw KRISS HDMap files: the samples of one array of a MATLAB .mat file (v5 or v7.3), read lazily and checked."""

from pathlib import Path
from typing import NoReturn

import h5py
import numpy as np
import scipy.io

from hdmap_train.data.normalization import PixelStats
from hdmap_train.errors import HdmapError

CHUNK = 4096  # samples read at a time for statistics


class MatSamples:
    """The samples of one array (H x W x 1 x N) of a MATLAB .mat file, v5 (scipy) or v7.3 (HDF5).

    Opening reads only the shape; the samples are read by `read` (a v5 file is loaded whole on the first read).
    """

    def __init__(self, path: Path, key: str = "Xdata") -> None:
        self.path = Path(path)
        self.key = key
        self.hdf5 = h5py.is_hdf5(self.path)
        self._array: np.ndarray | None = None
        try:
            if self.hdf5:
                with h5py.File(self.path, "r") as handle:
                    if key not in handle:
                        self._missing(list(handle.keys()))
                    shape = handle[key].shape[::-1]  # HDF5 stores MATLAB arrays transposed
            else:
                shapes = {name: shape for name, shape, _ in scipy.io.whosmat(self.path)}
                if key not in shapes:
                    self._missing(list(shapes))
                shape = shapes[key]
        except HdmapError:
            raise
        except Exception as exc:  # scipy/h5py raise many types for truncated or foreign files
            raise self._unreadable(exc) from exc
        if len(shape) > 4 or (len(shape) == 4 and shape[2] != 1):
            raise HdmapError(f"{self.path}: {key} has shape {shape}; expected H x W x 1 x N (single-channel samples).")
        self.height, self.width = int(shape[0]), int(shape[1])
        self.count = int(shape[-1]) if len(shape) >= 3 else 1

    def _missing(self, found: list[str]) -> NoReturn:
        msg = (
            f"{self.path} has no variable '{self.key}' (found: {', '.join(found) or 'nothing'}). "
            "Set prepare.key or use the KRISS HDMap files."
        )
        raise HdmapError(msg)

    def _unreadable(self, exc: Exception) -> HdmapError:
        return HdmapError(f"Cannot read {self.path}: {exc}. Replace the file (a MATLAB .mat with {self.key}).")

    def _load_v5(self) -> np.ndarray:
        try:
            return self._samples_first(scipy.io.loadmat(self.path, variable_names=[self.key])[self.key])
        except Exception as exc:  # a file whose header reads but whose data does not
            raise self._unreadable(exc) from exc

    @staticmethod
    def _samples_first(array: np.ndarray) -> np.ndarray:
        """MATLAB-order (H, W[, 1][, N]) -> (N, H, W)."""
        if array.ndim == 4:
            return np.moveaxis(array[:, :, 0, :], -1, 0)
        if array.ndim == 3:
            return np.moveaxis(array, -1, 0)
        return array[None]

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Samples `indices` (in that order) as an (n, H, W) array of the file's dtype; NaN/inf raise."""
        indices = np.asarray(indices, dtype=np.int64)
        if not self.hdf5 and self._array is None:
            self._array = self._load_v5()
        block = self._read_hdf5(indices) if self.hdf5 else self._array[indices]
        bad = ~np.isfinite(block).all(axis=(1, 2))
        if bad.any():
            raise HdmapError(f"{self.path}: sample {int(indices[bad][0])} of {self.key} contains NaN or infinite values.")
        return block

    def _read_hdf5(self, indices: np.ndarray) -> np.ndarray:
        """v7.3: the dataset is the MATLAB array transposed, (N[, 1], W, H); read only `indices`."""
        order = np.argsort(indices)
        ascending = indices[order]
        with h5py.File(self.path, "r") as handle:
            data = handle[self.key]
            if data.ndim == 2:
                picked = np.asarray(data)[None][np.zeros(len(indices), dtype=np.int64)]
            elif len(ascending) and ascending[-1] - ascending[0] == len(ascending) - 1:
                picked = data[int(ascending[0]) : int(ascending[-1]) + 1]
            else:
                picked = data[ascending.tolist()]  # h5py wants increasing indices
        picked = (picked[:, 0] if picked.ndim == 4 else picked).transpose(0, 2, 1)
        block = np.empty_like(picked)
        block[order] = picked
        return block

    def statistics(self) -> PixelStats:
        """Pixel statistics of every sample in the file."""
        stats = PixelStats()
        for start in range(0, self.count, CHUNK):
            stats.add(self.read(np.arange(start, min(start + CHUNK, self.count))))
        return stats
