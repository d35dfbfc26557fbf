"""PatchCore's coreset samplers: the blocked k-center greedy selects exactly anomalib's indices."""

import numpy as np
import pytest
import torch
from anomalib.models.components import KCenterGreedy

from hdmap_train.errors import HdmapError
from hdmap_train.models.patchcore import BlockedKCenterGreedy, HDMAPPatchcore


def select(sampler: type[KCenterGreedy], embedding: torch.Tensor, ratio: float, seed: int) -> list[int]:
    torch.manual_seed(seed)
    np.random.seed(seed)  # anomalib's sparse random projection draws from numpy's global generator too
    return sampler(embedding=embedding, sampling_ratio=ratio).select_coreset_idxs()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("ratio", [0.01, 0.1])
def test_blocked_sampler_returns_anomalibs_indices(seed: int, ratio: float, monkeypatch) -> None:
    monkeypatch.setattr(BlockedKCenterGreedy, "block_bytes", 50_000)  # several blocks and a partial last one
    embedding = torch.randn(3000, 96, generator=torch.Generator().manual_seed(seed))
    expected = select(KCenterGreedy, embedding, ratio, seed)
    indices = select(BlockedKCenterGreedy, embedding, ratio, seed)
    assert len(indices) == int(3000 * ratio) == len(set(indices))
    assert indices == expected


def test_blocked_sampler_on_unprojected_features_matches_anomalib() -> None:
    embedding = torch.rand(500, 4, 4)  # ndim != 2: anomalib flattens instead of projecting
    assert select(BlockedKCenterGreedy, embedding, 0.05, 3) == select(KCenterGreedy, embedding, 0.05, 3)


def test_fit_keeps_selected_rows_and_times_each_phase() -> None:
    model = HDMAPPatchcore(backbone="resnet18", pre_trained=False, coreset_sampling_ratio=0.1, coreset_sampler="blocked")
    embeddings = [torch.randn(200, 16), torch.randn(100, 16)]
    model.model.embedding_store.extend(embeddings)
    torch.manual_seed(0)
    np.random.seed(0)
    model.fit()
    assert model.model.memory_bank.shape == (30, 16) and not model.model.embedding_store
    stacked = torch.cat(embeddings)
    assert all(any(torch.equal(row, candidate) for candidate in stacked) for row in model.model.memory_bank)
    assert model.fit_phase_seconds["coreset_selection"] > 0 and model.fit_phase_seconds["memory_bank"] > 0


def test_unknown_sampler_is_a_clear_error() -> None:
    with pytest.raises(HdmapError, match="coreset_sampler 'fastest'.*anomalib, blocked"):
        HDMAPPatchcore(backbone="resnet18", pre_trained=False, coreset_sampler="fastest")
