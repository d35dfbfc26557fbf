"""PatchCore with a choice of coreset sampler and the fit time split into its three phases.

`coreset_sampler: anomalib` is anomalib's KCenterGreedy. `blocked` is the same algorithm with the same
arithmetic done in row blocks with buffers allocated once (BlockedKCenterGreedy): the same indices for
the same seed, faster on CPU and with bounded temporary memory (bench/patchcore_fit.py measures both).
Both run on the device of the stored embedding, which is the model's (a GPU under trainer=gpu); the blocked
sampler is given the model's device explicitly, and `coreset_device` (training_info) records where it ran.
On a CPU the indices are anomalib's for any block size; on a GPU while the projected features fit in one
block (block_bytes), since CUDA may sum a norm in another order for another block shape.
"""

import logging
import time

import torch
from anomalib.models import Patchcore
from anomalib.models.components import KCenterGreedy
from tqdm import tqdm

from hdmap_train.efficiency import synchronize
from hdmap_train.errors import HdmapError

log = logging.getLogger(__name__)


class BlockedKCenterGreedy(KCenterGreedy):
    """anomalib's k-center greedy without an N x d temporary per selected centre.

    Each iteration anomalib computes `‖x − c‖₂` for all N projected features at once, allocating (and
    page-faulting) an N x d difference and two N x 1 distance tensors. Here the same subtraction, vector
    norm and running minimum run over blocks of at most `block_bytes` into buffers allocated once, so
    every value, and therefore every selected index, is the one anomalib computes. The projection and
    the random first centre consume the random generators exactly as anomalib does.
    """

    # One block's difference buffer: bounds the temporary memory (anomalib's is N x d), and keeps each op big
    # enough that its thread synchronisation stays negligible when other processes share the cores (4 MiB
    # blocks were a little faster on an idle CPU and five times slower on a busy one).
    block_bytes = 64 << 20

    def __init__(self, embedding: torch.Tensor, sampling_ratio: float, device: torch.device | str | None = None,
                 block_bytes: int | None = None, progress: bool = True) -> None:
        """KCenterGreedy's sampler, computing on `device`.

        Args:
            embedding: the (N, d) patch features (or (N, ...) features, flattened unprojected).
            sampling_ratio: coreset size / N.
            device: where the selection runs; the embedding is moved there (default: where it is).
            block_bytes: size of one block's difference buffer (default: the class's block_bytes).
            progress: show a progress bar of the selection (off with trainer.enable_progress_bar=false).
        """
        super().__init__(embedding if device is None else embedding.to(device), sampling_ratio)
        if block_bytes is not None:
            self.block_bytes = block_bytes
        self.progress = progress

    def select_coreset_idxs(self) -> list[int]:
        """Indices of the coreset, in selection order (as KCenterGreedy.select_coreset_idxs)."""
        if self.embedding.ndim == 2:
            self.model.fit(self.embedding)
            self.features = self.model.transform(self.embedding)
        else:
            self.features = self.embedding.reshape(self.embedding.shape[0], -1)
        features = self.features
        n, dim = features.shape
        rows = min(n, max(1, self.block_bytes // (dim * features.element_size())))
        difference, distance = features.new_empty(rows, dim), features.new_empty(rows)
        min_distances = torch.full((n,), float("inf"), dtype=features.dtype, device=features.device)

        idx = torch.randint(high=self.n_observations, size=(1,), device=features.device).squeeze()
        selected = [idx]
        for _ in tqdm(range(self.coreset_size - 1), desc="Selecting Coreset Indices.", disable=not self.progress):
            center = features[idx]
            for start in range(0, n, rows):
                block = features[start : start + rows]
                diff, dist = difference[: len(block)], distance[: len(block)]
                torch.sub(block, center, out=diff)
                torch.linalg.vector_norm(diff, ord=2, dim=1, out=dist)
                torch.minimum(min_distances[start : start + rows], dist, out=min_distances[start : start + rows])
            idx = torch.max(min_distances, dim=0).indices
            min_distances[idx] = 0.0
            selected.append(idx)
        return torch.stack(selected).cpu().tolist()


CORESET_SAMPLERS = {"anomalib": KCenterGreedy, "blocked": BlockedKCenterGreedy}


class HDMAPPatchcore(Patchcore):
    """anomalib's Patchcore; `coreset_sampler` picks the sampler, `fit_phase_seconds` times the fit.

    fit_phase_seconds: feature_extraction (backbone passes over the training set), coreset_selection
    (random projection and k-center greedy), memory_bank (stacking the patch embeddings and keeping
    the selected rows).
    """

    def __init__(self, coreset_sampler: str = "anomalib", **kwargs) -> None:
        """Check the sampler choice, then build anomalib's Patchcore.

        Args:
            coreset_sampler: "anomalib" (KCenterGreedy) or "blocked" (BlockedKCenterGreedy: same indices, faster).
            **kwargs: anomalib Patchcore's arguments (backbone, layers, coreset_sampling_ratio, num_neighbors, ...).
        """
        if coreset_sampler not in CORESET_SAMPLERS:
            msg = f"Unknown model.module.coreset_sampler '{coreset_sampler}': use one of {', '.join(CORESET_SAMPLERS)}"
            raise HdmapError(msg)
        super().__init__(**kwargs)
        self.coreset_sampler = coreset_sampler
        self.coreset_device: str | None = None
        self.fit_phase_seconds = {"feature_extraction": 0.0, "coreset_selection": 0.0, "memory_bank": 0.0}

    def training_step(self, batch, *args, **kwargs) -> torch.Tensor:
        """The feature extraction of anomalib's training step, timed."""
        start = time.perf_counter()
        loss = super().training_step(batch, *args, **kwargs)
        self.fit_phase_seconds["feature_extraction"] += time.perf_counter() - start
        return loss

    def fit(self) -> None:
        """Coreset subsampling of the stored embeddings (PatchcoreModel.subsample_embedding, timed)."""
        if not self.model.embedding_store:
            msg = "Embedding store is empty. Cannot perform coreset selection."
            raise ValueError(msg)
        start = time.perf_counter()
        embedding = torch.vstack(self.model.embedding_store)
        self.model.embedding_store.clear()
        synchronize(embedding.device)
        stacked = time.perf_counter()
        if self.coreset_sampler == "blocked":
            progress = self._trainer is None or self.trainer.progress_bar_callback is not None
            sampler = BlockedKCenterGreedy(embedding, self.coreset_sampling_ratio, device=self.device, progress=progress)
        else:
            sampler = KCenterGreedy(embedding=embedding, sampling_ratio=self.coreset_sampling_ratio)
        self.coreset_device = str(sampler.embedding.device)
        log.info("Coreset selection (%s): %d of %d patch features on %s", self.coreset_sampler, sampler.coreset_size,
                 len(embedding), self.coreset_device)
        indices = sampler.select_coreset_idxs()
        selected = time.perf_counter()
        self.model.memory_bank = sampler.embedding[indices]
        synchronize(self.model.memory_bank.device)
        self.fit_phase_seconds["coreset_selection"] = selected - stacked
        self.fit_phase_seconds["memory_bank"] = (stacked - start) + (time.perf_counter() - selected)
