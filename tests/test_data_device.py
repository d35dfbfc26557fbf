"""Getting batches to the GPU: pinned loaders on a CUDA trainer (data.pin_memory) and the device-resident cache
(data.device_cache), which on a CPU runs the same code on device "cpu" and gives the default pipeline's batches."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from hdmap_train.data import datamodule as datamodule_module
from hdmap_train.data.cutpaste import CutPasteGenerator, SeverityCutPasteGenerator
from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule, build_datamodule
from hdmap_train.data.dataset import HDMAPImageBatch
from hdmap_train.data.images import resize
from hdmap_train.errors import HdmapError
from hdmap_train.train import run
from hdmap_train.weights import write_random_weights
from helpers.config import PRETRAINED, checked_datamodule, compose_cfg
from helpers.runs import assert_complete_record, tiny_run_cfg


def make_dataset(root: Path, n_train: int = 10, n_test: int = 4) -> Path:
    """Float TIFF HDMAP layout, domains A and B, 31 x 95 (two images of the test faults at 29 x 90)."""
    rng = np.random.default_rng(0)
    for domain in "AB":
        for split, label, count in (("train", "good", n_train), ("test", "good", n_test), ("test", "fault", n_test)):
            folder = root / f"domain_{domain}" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                shape = (29, 90) if label == "fault" and i < 2 else (31, 95)
                tifffile.imwrite(folder / f"{i:06d}.tiff", rng.random(shape, dtype=np.float32) * 3)
    return root


def datamodule(root: Path, **kwargs) -> MultiDomainHDMAPDataModule:
    args = {"source": "A", "targets": ["B"], "image_size": (32, 96), "val_fraction": 0.2, "seed": 1, "subgroups": []}
    return checked_datamodule(root, **(args | kwargs))


def loaders(dm: MultiDomainHDMAPDataModule) -> list:
    return [dm.train_dataloader(), dm.val_dataloader(), *dm.test_dataloaders().values()]


@pytest.mark.parametrize(("overrides", "cuda", "pinned"), [
    (["trainer=gpu"], True, True),
    (["trainer=gpu"], False, False),                       # no CUDA: nothing to pin for
    (["trainer=cpu"], True, False),                        # a CPU run on a GPU machine
    ([], True, True),                                      # accelerator auto picks the GPU
    (["trainer=gpu", "data.pin_memory=false"], True, False),
    (["trainer=cpu", "data.pin_memory=true"], False, True),
    (["trainer=gpu", "data.device_cache=true"], True, False),  # batches are on the GPU already
])
def test_loaders_pin_memory_as_the_config_says(tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               overrides: list[str], cuda: bool, pinned: bool) -> None:
    monkeypatch.setattr(datamodule_module.torch.cuda, "is_available", lambda: cuda)
    cfg = compose_cfg([f"data.root={tiny_dataset}", "size=tiny", "domain.targets=[B]", *overrides], tmp_path)
    dm = build_datamodule(cfg.data, cfg.domain, seed=0)
    assert dm.pin_memory is pinned
    if not dm.cache_device:  # (a CUDA cache cannot be built without CUDA)
        dm.setup()
        assert [loader.pin_memory for loader in loaders(dm)] == [pinned] * 4
        assert dm.summary()["pin_memory"] is pinned


def test_pinned_batch_keeps_the_pinned_tensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pinned = []

    def fake_pin(tensor: torch.Tensor) -> torch.Tensor:  # pinning needs CUDA: record which copies were made
        copy = tensor.clone()
        pinned.append(copy)
        return copy

    dm = datamodule(make_dataset(tmp_path / "d"))
    dm.setup()
    batch = dm.test_data["domain_B"].__getitems__([0, 3, 5])
    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    moved = batch.pin_memory()
    assert isinstance(moved, HDMAPImageBatch) and moved.image_path == batch.image_path
    assert moved.image.data_ptr() == pinned[0].data_ptr() and moved.gt_label.data_ptr() == pinned[1].data_ptr()
    assert torch.equal(moved.image, batch.image) and torch.equal(moved.gt_label, batch.gt_label)


def survives_pinning(image: torch.Tensor) -> None:
    """What DataLoader(pin_memory=True) does to a batch tensor, without CUDA: a copy into a tensor of the same size
    and strides (Tensor.pin_memory's empty_strided + copy_), which fails when elements share memory (stride 0)."""
    assert torch._debug_has_internal_overlap(image) == 0  # 0: no element shares memory with another
    pinned_like = torch.empty_strided(image.size(), image.stride(), dtype=image.dtype)
    pinned_like.copy_(image)
    assert torch.equal(pinned_like, image)


CACHE_TIERS = {"resized": {}, "native": {"image_size": (256, 512), "cache_limit_mb": 0.5, "resize": "aspect_pad"},
               "stream": {"cache_limit_mb": 0}, "device": {"device_cache": True, "accelerator": "cpu"}}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("tier", list(CACHE_TIERS))
def test_every_loader_batch_is_single_channel_contiguous_and_survives_pinning(tmp_path: Path, tier: str, channels: int) -> None:
    dm = datamodule(make_dataset(tmp_path / "d"), channels=channels, validation="synthetic_faults", **CACHE_TIERS[tier])
    dm.setup()
    assert dm.train_data.cache_mode == tier
    height, width = dm.image_size
    for loader in loaders(dm):
        for batch in loader:
            assert batch.image.shape[1:] == (1, height, width) and batch.image.dtype == torch.float32
            assert batch.image.is_contiguous()
            survives_pinning(batch.image)
            survives_pinning(batch.gt_label)
            model_batch = dm.on_after_batch_transfer(batch, 0)
            assert model_batch.image.shape[1:] == (channels, height, width)
            assert torch.equal(model_batch.image, batch.image.expand(-1, channels, -1, -1))


def test_channels_are_replicated_as_a_contiguous_copy_off_the_cpu(tmp_path: Path) -> None:
    dm = datamodule(make_dataset(tmp_path / "d"))
    dm.setup()
    batch = dm.train_data.__getitems__([0, 1, 2])
    on_meta = dm.on_after_batch_transfer(batch.update(in_place=False, image=batch.image.to("meta")), 0)  # any non-CPU device
    assert on_meta.image.shape == (3, 3, 32, 96) and on_meta.image.is_contiguous() and on_meta.image.device.type == "meta"
    on_cpu = dm.on_after_batch_transfer(batch, 0)
    assert on_cpu.image.stride(1) == 0  # on the CPU the bit-identical read-only view, as the models always got


@pytest.mark.parametrize("generator", [
    CutPasteGenerator(cut_w_range=(2, 20), cut_h_range=(1, 3), probability=0.5),
    SeverityCutPasteGenerator(patch_width_range=(4, 20), probability=0.5),
])
def test_cutpaste_training_batches_survive_pinning(tmp_path: Path, generator: CutPasteGenerator) -> None:
    dm = datamodule(make_dataset(tmp_path / "d"))
    dm.setup()
    model_batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    faults = generator(model_batch.image[:, :1])  # what DRAEM-CutPaste and DRAEM-SevNet train on
    for tensor in faults:
        survives_pinning(tensor)


@pytest.mark.parametrize("options", [
    {"channels": 3},
    {"channels": 1, "image_size": (64, 192), "normalization": {"mode": "zscore"}, "resize": "aspect_pad"},
    {"normalization": {"mode": "per_image"}, "resize": "nearest", "validation": "synthetic_faults"},
])
def test_device_cache_gives_the_default_pipelines_batches(tmp_path: Path, options: dict) -> None:
    root = make_dataset(tmp_path / "d")
    default, device = datamodule(root, **options), datamodule(root, device_cache=True, accelerator="cpu", **options)
    default.setup()
    device.setup()
    assert device.cache_device == torch.device("cpu") and device.summary()["cache"]["device"] == "cpu"
    pairs = [(default.train_data, device.train_data), (default.val_data, device.val_data),
             *((default.test_data[d], device.test_data[d]) for d in default.test_data)]
    for expected, got in pairs:
        assert expected.cache_mode == "resized" and got.cache_mode == "device"
        indices = list(range(len(expected)))[::-1]
        want, have = expected.__getitems__(indices), got.__getitems__(indices)
        assert have.image.device == device.cache_device and have.image.shape == want.image.shape
        torch.testing.assert_close(have.image, want.image, rtol=1e-5, atol=1e-6)
        assert have.image_path == want.image_path and torch.equal(have.gt_label, want.gt_label)
    for expected, got in zip(loaders(default)[1:], loaders(device)[1:], strict=True):  # validation and test loaders
        for want, have in zip(expected, got, strict=True):
            torch.testing.assert_close(have.image, want.image, rtol=1e-5, atol=1e-6)
            assert have.image_path == want.image_path


@pytest.mark.parametrize(("options", "message"), [
    ({"num_workers": 2}, r"data.device_cache=true .* set data.num_workers=0 \(now 2\) or data.device_cache=false"),
    ({"pin_memory": True}, "data.pin_memory=true has nothing to pin with data.device_cache=true; set data.pin_memory=auto"),
    ({"cache_limit_mb": 0.01}, r"device_cache=true: the domain_A train images need 0\.1 MiB on cpu, more than the 0\.0 MiB "
                               r"left of data.cache_limit_mb=0.01; raise data.cache_limit_mb or set data.device_cache=false"),
])
def test_device_cache_config_errors_name_the_fix(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(HdmapError, match=message):
        datamodule(make_dataset(tmp_path / "d"), device_cache=True, accelerator="cpu", **options).setup()


def test_unknown_pin_memory_value_is_named(tmp_path: Path) -> None:
    with pytest.raises(HdmapError, match="data.pin_memory=sometimes must be auto, true or false"):
        datamodule(make_dataset(tmp_path / "d"), pin_memory="sometimes")


def upsampling_tolerance(images: torch.Tensor, native: tuple[int, int]) -> float:
    """How far two float32 bilinear resizes of the same z-scored images may differ between devices.

    Both compute each output pixel as a blend (1 - l) x a + l x b of two neighbours, with the weight l derived from
    the source coordinate (x + 0.5) / scale - 0.5; the CPU and CUDA kernels compute that coordinate with different
    rounding (a reciprocal scale, fused multiply-adds), so l may differ by about one float32 rounding of the
    largest coordinate (max(native) x eps), and the pixel by that times |b - a|, at most the images' value range.
    Two roundings each side: factor 4.
    """
    return 4 * torch.finfo(torch.float32).eps * max(native) * float(images.max() - images.min())


def test_upsampling_tolerance_covers_a_float32_weight_error_and_not_more() -> None:
    images = torch.rand(2, 1, 31, 95) * 3
    tolerance = upsampling_tolerance(images, (31, 95))
    assert 1.07e-05 < tolerance < 1e-3  # the H200's measured difference fits; a real pipeline bug (>= 1e-3) does not
    resized = resize(images, (224, 224))
    nudged = resize(images.double(), (224, 224)).float()  # the same blend computed in float64: rounding only
    assert (resized - nudged).abs().max() < tolerance


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_cache_on_the_gpu_matches_the_cpu_pipeline(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d")
    options = {"image_size": (224, 224), "normalization": {"mode": "zscore"}}
    default, device = datamodule(root, **options), datamodule(root, device_cache=True, accelerator="gpu", **options)
    default.setup()
    device.setup()
    for domain, expected in default.test_data.items():
        indices = list(range(len(expected)))
        have, want = device.test_data[domain].__getitems__(indices).image, expected.__getitems__(indices).image
        assert have.is_cuda
        torch.testing.assert_close(have.cpu(), want, rtol=0, atol=upsampling_tolerance(want, (31, 95)))
    assert next(iter(device.train_dataloader())).image.is_cuda
    pinned = datamodule(root, accelerator="gpu", **options)
    pinned.setup()
    assert next(iter(pinned.train_dataloader())).image.is_pinned()


@pytest.mark.slow
def test_patchcore_run_with_device_cache_scores_as_the_default(tiny_dataset: Path, tmp_path: Path, hf_cache: Path) -> None:
    write_random_weights(PRETRAINED["patchcore"], hf_cache)
    scores = {}
    for name, extra in (("default", []), ("device", ["data.device_cache=true"])):
        run(tiny_run_cfg("patchcore", tiny_dataset, tmp_path / name, *extra), tmp_path / name)
        record = assert_complete_record(tmp_path / name, "patchcore")
        scores[name] = pd.read_csv(tmp_path / name / "predictions.csv")
    cache = record["data"]["cache"]
    assert cache["device"] == "cpu" and cache["train"] == cache["val"] == "device" and set(cache["test"].values()) == {"device"}
    assert record["training_info"]["coreset_device"] == "cpu" and record["data"]["pin_memory"] is False
    assert scores["device"].image_path.tolist() == scores["default"].image_path.tolist()
    np.testing.assert_allclose(scores["device"].anomaly_score, scores["default"].anomaly_score, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_patchcore_gpu_run_pins_or_caches_on_the_gpu(tiny_dataset: Path, tmp_path: Path, hf_cache: Path) -> None:
    write_random_weights(PRETRAINED["patchcore"], hf_cache)
    for name, extra in (("pinned", []), ("device", ["data.device_cache=true"])):
        run(tiny_run_cfg("patchcore", tiny_dataset, tmp_path / name, "trainer=gpu", *extra), tmp_path / name)
        record = assert_complete_record(tmp_path / name, "patchcore")
        assert record["training_info"]["coreset_device"].startswith("cuda")
        assert record["data"]["pin_memory"] is (name == "pinned")
        assert record["data"]["cache"].get("device") == ("cuda" if name == "device" else None)
