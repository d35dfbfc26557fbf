"""The batched Perlin anomaly generator against anomalib's per-image one: kernels, statistics, device contract."""

import math

import pytest
import torch
from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator, generate_perlin_noise
from scipy.stats import ks_2samp
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF  # noqa: N812

from hdmap_train.data import image_kernels, perlin

H, W = 32, 96


@pytest.mark.parametrize("scale", [(1, 1), (4, 8), (32, 32), (2, 16)])
def test_perlin_noise_is_anomalibs(scale):
    torch.manual_seed(0)
    reference = generate_perlin_noise(H, W, scale=scale, device=torch.device("cpu"))
    torch.manual_seed(0)
    angles = torch.zeros(1, image_kernels.GRID, image_kernels.GRID)
    angles[0, : scale[0] + 1, : scale[1] + 1] = 2 * torch.pi * torch.rand(scale[0] + 1, scale[1] + 1)
    noise = image_kernels.perlin_noise(torch.tensor([[float(s) for s in scale]]), angles, H, W)[0]
    assert torch.allclose(noise, reference, atol=1e-5)


def test_warps_and_kernels_are_torchvisions():
    torch.manual_seed(0)
    x = torch.rand(4, 1, H, W) * 1.5 - 0.3
    angle = torch.tensor([10.0, -45.0, 80.0, 0.0])
    bilinear = torch.stack([
        TF.affine(x[i], angle=float(angle[i]), translate=[0, 0], scale=1.0, shear=[0.0, 0.0],
                  interpolation=v2.InterpolationMode.BILINEAR, fill=0)
        for i in range(4)
    ])
    mine = image_kernels.warp(x, image_kernels.inverse_affine(angle, torch.zeros(4), H, W), torch.zeros(4, dtype=torch.bool))
    assert torch.allclose(mine, bilinear, atol=1e-4)
    shear = torch.tensor([0.1667, -0.3, 0.1, 0.0])
    nearest = torch.stack([
        TF.affine(x[i], angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(float(shear[i]))), 0.0],
                  interpolation=v2.InterpolationMode.NEAREST, fill=None, center=[0, 0])
        for i in range(4)
    ])
    mine = image_kernels.warp(x, image_kernels.inverse_affine(torch.zeros(4), shear, H, W), torch.ones(4, dtype=torch.bool))
    assert torch.allclose(mine, nearest, atol=1e-4)
    x3 = x.expand(4, 3, H, W).contiguous()
    assert torch.allclose(image_kernels.equalize(x3), torch.stack([TF.equalize(i) for i in x3]), atol=1e-6)
    factor = torch.tensor([2.0, 0.5, 1.9, 0.1])
    sharp = torch.stack([TF.adjust_sharpness(x3[i], float(factor[i])) for i in range(4)])
    assert torch.allclose(image_kernels.sharpen(x3, factor), sharp, atol=1e-6)
    colour = torch.rand(4, 3, H, W)
    hue = torch.tensor([0.1, -0.13, 0.0, 0.05])
    assert torch.allclose(image_kernels.adjust_hue(colour, hue), torch.stack([TF.adjust_hue(colour[i], float(hue[i])) for i in range(4)]), atol=1e-5)


def _samples(generator, seed: int, count: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    images = torch.zeros(count, 3, H, W)  # zero images: the output is beta x the augmented source inside the mask
    outputs, masks = zip(*(generator(images[i : i + 32]) for i in range(0, count, 32)), strict=True)
    return torch.cat(outputs), torch.cat(masks)


def test_statistics_match_anomalib():
    torch.set_num_threads(1)
    reference = PerlinAnomalyGenerator(blend_factor=1.0)
    batched = perlin.BatchedPerlinAnomalyGenerator(blend_factor=1.0)
    ref_out, ref_mask = _samples(reference, 0)
    out, mask = _samples(batched, 1)
    ref_cover, cover = ref_mask.mean(dim=(1, 2, 3)), mask.mean(dim=(1, 2, 3))
    share = (cover > 0).float().mean().item()
    assert abs(share - (ref_cover > 0).float().mean().item()) < 0.13  # both ~ 0.5 (binomial sd 0.03 each)
    assert 0.4 < share < 0.6
    assert ks_2samp(ref_cover[ref_cover > 0].numpy(), cover[cover > 0].numpy()).pvalue > 0.01
    ref_inside, inside = ref_out[ref_mask.expand_as(ref_out) > 0], out[mask.expand_as(out) > 0]
    # pixels of one image are correlated: anomalib against itself (seeds 3, 4) differs by 0.045 in mean, 0.13 in quantiles
    assert abs(ref_inside.mean().item() - inside.mean().item()) < 0.08
    quantiles = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    assert (torch.quantile(ref_inside[::7], quantiles) - torch.quantile(inside[::7], quantiles)).abs().max() < 0.2
    assert ((out == 0) | (mask > 0)).all()  # nothing changes outside the mask


def test_mask_is_the_noise_threshold_and_never_empty_when_anomalous():
    generator = perlin.BatchedPerlinAnomalyGenerator()
    generator._compact_now = False
    torch.manual_seed(0)
    anomalous = torch.ones(64, dtype=torch.bool)
    noise = generator.masked_noise(anomalous, H, W, torch.float32)
    assert (noise > 0.5).flatten(1).any(1).all()
    torch.manual_seed(5)
    images = torch.rand(16, 3, H, W)
    generator.compact = False
    augmented, mask = generator(images)
    changed = (augmented != images).any(1, keepdim=True)
    assert not (changed & (mask == 0)).any()


def test_compact_and_static_paths_agree():
    images = torch.rand(16, 3, H, W)
    compact, static = perlin.BatchedPerlinAnomalyGenerator(compact=True), perlin.BatchedPerlinAnomalyGenerator(compact=False)
    static.solarize_threshold = compact.solarize_threshold
    static.retry_rounds = compact.retry_rounds = 0
    torch.manual_seed(2)
    a, m = compact(images)
    torch.manual_seed(2)
    b, n = static(images)
    assert torch.equal(m, n)
    assert torch.allclose(a, b, atol=1e-5)


def test_device_dtype_and_no_host_sync(monkeypatch):
    generator = perlin.BatchedPerlinAnomalyGenerator(blend_factor=(0.1, 1.0))
    augmented, mask = generator(torch.zeros(8, 3, H, W, device="meta"))  # meta tensors have no values to read
    assert augmented.device.type == mask.device.type == "meta"
    assert augmented.shape == (8, 3, H, W) and mask.shape == (8, 1, H, W)

    def sync(*args, **kwargs):
        raise AssertionError("host synchronisation")

    images = torch.rand(8, 3, H, W, dtype=torch.float64)
    generator.compact = False  # the path every non-CPU device takes
    for name in ("item", "tolist", "__bool__", "nonzero", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, sync)
    augmented, mask = generator(images)
    monkeypatch.undo()
    assert augmented.dtype == mask.dtype == torch.float64


def test_construction_draws_what_anomalibs_draws():
    torch.manual_seed(0)
    PerlinAnomalyGenerator()
    after_anomalib = torch.rand(1)
    torch.manual_seed(0)
    perlin.BatchedPerlinAnomalyGenerator()
    assert torch.equal(torch.rand(1), after_anomalib)


def test_moves_like_a_module():
    generator = perlin.BatchedPerlinAnomalyGenerator()
    assert generator.cpu().to(torch.float64) is generator  # Lightning moves the model and its augmenter


def _faults(generator, seed: int, count: int = 384):
    images = torch.rand(count, 1, H, W, generator=torch.Generator().manual_seed(9)) + 0.5
    torch.manual_seed(seed)
    return generator(images), images


@pytest.mark.parametrize("kind", ["cutpaste", "sevnet"])
def test_cutpaste_statistics_match_the_per_image_reference(kind):
    from hdmap_train.data import cutpaste
    from helpers import cutpaste_reference as reference

    if kind == "cutpaste":
        kwargs = {"cut_w_range": (2, 60), "cut_h_range": (2, 8), "amplitude_range": (0.2, 1.0), "patch_count": 2}
        new, old = cutpaste.CutPasteGenerator(**kwargs), reference.CutPasteGenerator(**kwargs)
    else:
        new, old = cutpaste.SeverityCutPasteGenerator(patch_width_range=(4, 60)), reference.SeverityCutPasteGenerator(patch_width_range=(4, 60))
    (a, _), (b, images) = _faults(old, 0), _faults(new, 1)
    for faults in (a, b):
        changed = (faults.images != images).any(1, keepdim=True)
        assert not (changed & (faults.masks == 0)).any()
    assert abs(a.labels.mean() - b.labels.mean()) < 0.12
    area_a, area_b = a.masks.sum((1, 2, 3))[a.labels > 0], b.masks.sum((1, 2, 3))[b.labels > 0]
    assert ks_2samp(area_a.numpy(), area_b.numpy()).pvalue > 0.01
    amp_a, amp_b = a.amplitudes[a.labels > 0], b.amplitudes[b.labels > 0]
    assert ks_2samp(amp_a.numpy(), amp_b.numpy()).pvalue > 0.01
    added_a = ((a.images - images).abs().sum((1, 2, 3)) / a.masks.sum((1, 2, 3)).clamp_min(1))[a.labels > 0]
    added_b = ((b.images - images).abs().sum((1, 2, 3)) / b.masks.sum((1, 2, 3)).clamp_min(1))[b.labels > 0]
    assert ks_2samp(added_a.numpy(), added_b.numpy()).pvalue > 0.01  # intensity added per masked pixel


def test_cutpaste_targets_never_overlap_their_source_and_fall_back():
    from hdmap_train.data.cutpaste import target_positions

    torch.manual_seed(0)
    n = 2000
    h, w = torch.randint(1, 20, (n,)), torch.randint(1, 60, (n,))
    st, sl = (torch.rand(n) * (H - h + 1)).long(), (torch.rand(n) * (W - w + 1)).long()
    top, left = target_positions(H, W, h, w, st, sl)
    assert ((top + h <= H) & (left + w <= W) & (top >= 0) & (left >= 0)).all()
    room = (st >= h) | (st + 2 * h <= H) | (sl >= w) | (sl + 2 * w <= W)  # a non-overlapping position exists
    apart = (top + h <= st) | (top >= st + h) | (left + w <= sl) | (left >= sl + w)
    assert room.float().mean() > 0.8 and apart[room].all() and not ((top == st) & (left == sl)).any()
    top, left = target_positions(4, 10, torch.tensor([3] * 50), torch.tensor([8] * 50), torch.zeros(50, dtype=torch.long), torch.ones(50, dtype=torch.long))
    assert not ((top == 0) & (left == 1)).any()
    assert set(zip(top.tolist(), left.tolist(), strict=True)) == {(0, 0), (0, 2), (1, 0), (1, 1), (1, 2)}


def test_cutpaste_stays_on_device_without_host_sync(monkeypatch):
    from hdmap_train.data.cutpaste import CutPasteGenerator, SeverityCutPasteGenerator

    for generator in (CutPasteGenerator(normalize_patch=True, patch_count=2, cut_w_range=(2, 40)), SeverityCutPasteGenerator(patch_width_range=(4, 40))):
        faults = generator(torch.zeros(8, 1, H, W, device="meta"))
        assert faults.images.device.type == faults.masks.device.type == "meta"

        def sync(*args, **kwargs):
            raise AssertionError("host synchronisation")

        images = torch.rand(8, 1, H, W, dtype=torch.float64)
        for name in ("item", "tolist", "__bool__", "nonzero", "cpu", "numpy", "__int__", "__float__"):
            monkeypatch.setattr(torch.Tensor, name, sync)
        faults = generator(images, torch.arange(8) % 2 == 0)
        monkeypatch.undo()
        assert faults.images.dtype == faults.masks.dtype == faults.amplitudes.dtype == torch.float64
