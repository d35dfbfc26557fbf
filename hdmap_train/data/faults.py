"""HDMAP-like faults on decoded images: thin, additive, horizontal bright lines.

One generator for both the built-in synthetic dataset and the "synthetic faults" validation set, so
the two share one fault family. (The CutPaste faults that DRAEM-style models train on are drawn on
tensor batches by hdmap_train.data.cutpaste.)
"""

from dataclasses import dataclass

import numpy as np


def add_line_faults(
    image: np.ndarray,
    rng: np.random.Generator,
    strength: tuple[float, float],
    scale: float,
    rows: tuple[int, int] = (1, 2),
    lines: tuple[int, int] = (1, 3),
    min_length: int = 10,
) -> np.ndarray:
    """Add `lines` (inclusive range) horizontal lines to `image` in place and return it.

    Each line is `rows` (inclusive range) pixel rows high, at least `min_length` pixels long, at a
    random position, and adds `scale` times a value drawn uniformly from `strength` (never clipped).
    """
    height, width = image.shape
    for _ in range(rng.integers(lines[0], lines[1] + 1)):
        n_rows = min(int(rng.integers(rows[0], rows[1] + 1)), height)
        length = int(rng.integers(min(min_length, width), width + 1))
        top = int(rng.integers(0, height - n_rows + 1))
        left = int(rng.integers(0, width - length + 1))
        image[top : top + n_rows, left : left + length] += rng.uniform(*strength) * scale
    return image


@dataclass(frozen=True)
class FaultInjector:
    """Deterministic line faults for validation images: image k always gets the same fault.

    Args:
        scale: line amplitude unit, in image units (the source training maximum).
        strength: line amplitude range, in units of `scale`.
        rows: line height range in pixel rows (inclusive).
        seed: with the image index, the seed of each image's fault.
    """

    scale: float  # line amplitude unit, in image units (the source training maximum)
    strength: tuple[float, float] = (0.5, 1.5)
    rows: tuple[int, int] = (1, 2)
    seed: int = 0

    def __call__(self, image: np.ndarray, index: int) -> np.ndarray:
        """A copy of `image` with the faults of sample `index` added."""
        rng = np.random.default_rng([self.seed, index])
        return add_line_faults(image.astype(np.float32, copy=True), rng, self.strength, self.scale, rows=self.rows)

    def choose(self, n: int, fraction: float) -> np.ndarray:
        """Sorted positions of the faulty samples among n: round(fraction * n), at least one of each kind."""
        k = round(n * fraction)
        if n >= 2:
            k = min(max(k, 1), n - 1)
        return np.sort(np.random.default_rng([self.seed, n]).choice(n, size=k, replace=False))
