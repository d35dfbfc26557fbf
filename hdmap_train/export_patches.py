"""The one anomalib method hdmap_train replaces while exporting (and only then), for correctness.

`PatchcoreModel.nearest_neighbors` searches the memory bank in chunks of 1024 query patches, chosen by a Python
`if` on the number of patches. torch.export cannot keep that branch with a dynamic batch (it would hold only for
batch sizes up to 1024 / patches per image) and refuses the model, so anomalib's ONNX and OpenVINO exports of
PatchCore fail. During the export the search is one distance matrix (anomalib's own branch for up to 1024
patches: the same arithmetic, no branch); the checkpoint model keeps anomalib's search. The exported model's
memory is then one (patches x memory bank) float matrix per batch, the cost of that simpler graph. Export
parity (hdmap_train.export_parity) checks the result; tests/test_library_patches.py fails when anomalib changes it.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from types import MethodType

import torch
from anomalib.models.image.patchcore.torch_model import PatchcoreModel


def unchunked_nearest_neighbors(self: PatchcoreModel, embedding: torch.Tensor, n_neighbors: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PatchcoreModel.nearest_neighbors without chunks: (distances, memory-bank indices) of the n nearest."""
    distances = self.euclidean_dist(embedding, self.memory_bank)
    if n_neighbors == 1:
        return distances.min(1)
    return distances.topk(k=n_neighbors, largest=False, dim=1)


@contextmanager
def export_friendly(module: torch.nn.Module) -> Iterator[None]:
    """Within the block, every PatchcoreModel inside `module` searches its memory bank without chunks."""
    patched = [m for m in module.modules() if isinstance(m, PatchcoreModel)]
    for model in patched:
        model.nearest_neighbors = MethodType(unchunked_nearest_neighbors, model)
    try:
        yield
    finally:
        for model in patched:
            del model.nearest_neighbors
