"""PatchCore's coreset samplers: the blocked k-center greedy selects exactly anomalib's indices, whatever its block
size, on the device it is given (the model's)."""

import numpy as np
import pytest
import torch
from anomalib.models.components import KCenterGreedy

from hdmap_train.errors import HdmapError
from hdmap_train.models.patchcore import BlockedKCenterGreedy, HDMAPPatchcore


def select(sampler: type[KCenterGreedy], embedding: torch.Tensor, ratio: float, seed: int, **options) -> list[int]:
    torch.manual_seed(seed)
    if embedding.is_cuda:
        torch.cuda.manual_seed(seed)
    np.random.seed(seed)  # anomalib's sparse random projection draws from numpy's global generator too
    return sampler(embedding=embedding, sampling_ratio=ratio, **options).select_coreset_idxs()


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


@pytest.mark.parametrize("options", [{"block_bytes": 1}, {"block_bytes": 4096, "device": "cpu"},
                                     {"block_bytes": 1 << 30, "device": torch.device("cpu")}, {}])
def test_blocked_sampler_is_the_same_for_every_block_size_and_device_argument(options: dict) -> None:
    embedding = torch.randn(1000, 64, generator=torch.Generator().manual_seed(5))  # 1 B: one row per block
    assert select(BlockedKCenterGreedy, embedding, 0.05, 2, **options) == select(KCenterGreedy, embedding, 0.05, 2)


def test_blocked_sampler_computes_on_the_device_it_is_given() -> None:
    sampler = BlockedKCenterGreedy(torch.randn(100, 8), 0.1, device="meta")  # a device without data, on any machine
    with pytest.raises(RuntimeError, match="meta tensors"):  # the selection reads an index: it was on meta, not the CPU
        sampler.select_coreset_idxs()
    assert sampler.embedding.device.type == sampler.features.device.type == "meta"  # the projection ran there too


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
    assert model.coreset_device == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fit_selects_the_coreset_on_the_models_gpu() -> None:
    embedding = torch.randn(20000, 128, generator=torch.Generator().manual_seed(0))
    model = HDMAPPatchcore(backbone="resnet18", pre_trained=False, coreset_sampling_ratio=0.01, coreset_sampler="blocked").cuda()
    model.model.embedding_store.append(embedding)  # on the CPU: fit moves it to the model's device
    torch.manual_seed(0)
    torch.cuda.manual_seed(0)
    np.random.seed(0)
    model.fit()
    assert model.coreset_device == "cuda:0" and model.model.memory_bank.is_cuda and model.model.memory_bank.shape == (200, 128)
    on_gpu = embedding.cuda()
    assert select(BlockedKCenterGreedy, on_gpu, 0.01, 0) == select(KCenterGreedy, on_gpu, 0.01, 0)  # one block: anomalib's sums
    # smaller blocks may reduce each norm in another order on a GPU (CUDA picks its reduction layout by shape)
    assert len(set(select(BlockedKCenterGreedy, on_gpu, 0.01, 0, block_bytes=50_000))) == 200


def test_unknown_sampler_is_a_clear_error() -> None:
    with pytest.raises(HdmapError, match="coreset_sampler 'fastest'.*anomalib, blocked"):
        HDMAPPatchcore(backbone="resnet18", pre_trained=False, coreset_sampler="fastest")
