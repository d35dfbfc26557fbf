"""DRAEM-CutPaste: additive CutPaste generator, 1-channel network, loss, synthetic-fault validation."""

from pathlib import Path

import pytest
import torch
from anomalib.data import ImageBatch

from hdmap_train.data.cutpaste import CutPasteGenerator, target_position
from hdmap_train.errors import HdmapError
from hdmap_train.models import build_model
from hdmap_train.models.components import DraemFocalLoss
from hdmap_train.models.draem_cutpaste import DraemCutPaste, DraemCutPasteModel
from hdmap_train.train import run
from helpers.config import compose_cfg
from helpers.runs import assert_complete_record, tiny_run_cfg, validate_twice

TINY = ["model=draem_cutpaste", "size=tiny"]


def unique_images(batch: int, height: int = 32, width: int = 96) -> torch.Tensor:
    """Positive images whose pixel values are all different (a patch's origin can be found by value)."""
    return (torch.arange(batch * height * width, dtype=torch.float32).reshape(batch, 1, height, width) + 1) / 1000


def test_generator_adds_a_scaled_copy_of_another_region_and_masks_the_target() -> None:
    torch.manual_seed(0)
    generator = CutPasteGenerator(cut_w_range=(5, 40), cut_h_range=(1, 3), amplitude_range=(0.5, 2.0))
    clean = unique_images(6)
    faults = generator(clean, faulted=torch.ones(6, dtype=torch.bool))
    assert torch.equal(faults.labels, torch.ones(6))
    for image, fault, mask, amplitude in zip(clean, faults.images, faults.masks, faults.amplitudes, strict=True):
        rows, cols = torch.nonzero(mask[0], as_tuple=True)
        top, left, h, w = rows.min(), cols.min(), rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert mask.sum() == h * w and 1 <= h <= 3 and 5 <= w <= 40 and 0.5 <= amplitude <= 2.0
        added = (fault - image)[0]
        assert torch.all(added[mask[0] == 0] == 0)
        patch = added[top : top + h, left : left + w] / amplitude
        src = torch.nonzero(torch.isclose(image[0], patch[0, 0]))[0]
        assert torch.allclose(image[0, src[0] : src[0] + h, src[1] : src[1] + w], patch, rtol=1e-4)
        overlap_rows = src[0] < top + h and top < src[0] + h
        overlap_cols = src[1] < left + w and left < src[1] + w
        assert not (overlap_rows and overlap_cols), "the patch must be added at a different location"


def test_generator_leaves_clean_images_untouched_and_follows_probability() -> None:
    torch.manual_seed(1)
    clean = unique_images(200, 32, 32)
    faults = CutPasteGenerator(cut_w_range=(2, 20), cut_h_range=(1, 2), probability=0.3)(clean)
    normal = faults.labels == 0
    assert torch.equal(faults.images[normal], clean[normal])
    assert faults.masks[normal].sum() == 0 and faults.amplitudes[normal].sum() == 0
    assert 0.2 < faults.labels.mean() < 0.4
    assert torch.all(faults.masks.sum((1, 2, 3))[~normal] > 0)


def test_generator_normalize_patch_puts_amplitude_in_image_units() -> None:
    torch.manual_seed(2)
    clean = unique_images(4)
    generator = CutPasteGenerator(cut_w_range=(3, 10), cut_h_range=(1, 2), amplitude_range=(0.2, 0.3), normalize_patch=True)
    faults = generator(clean, faulted=torch.ones(4, dtype=torch.bool))
    peaks = (faults.images - clean).flatten(1).amax(1)
    assert torch.allclose(peaks, faults.amplitudes)


def test_generator_is_reproducible_under_a_seed_and_never_clamps() -> None:
    clean = torch.full((4, 1, 32, 96), 0.9)
    generator = CutPasteGenerator(cut_w_range=(10, 20), cut_h_range=(2, 2), amplitude_range=(1.0, 1.0))
    torch.manual_seed(5)
    first = generator(clean, faulted=torch.ones(4, dtype=torch.bool))
    torch.manual_seed(5)
    second = generator(clean, faulted=torch.ones(4, dtype=torch.bool))
    assert torch.equal(first.images, second.images) and torch.equal(first.masks, second.masks)
    assert first.images.max() == pytest.approx(1.8)  # 0.9 + 1.0 * 0.9, above 1: not clamped


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cut_w_range": (2, 96)}, "cut_w_range below 96"),
        ({"cut_h_range": (1, 32)}, "cut_h_range below 32"),
    ],
)
def test_generator_rejects_patches_larger_than_the_image(kwargs: dict, message: str) -> None:
    generator = CutPasteGenerator(**{"cut_w_range": (2, 10), "cut_h_range": (1, 2), **kwargs})
    with pytest.raises(HdmapError, match=message):
        generator(torch.rand(2, 1, 32, 96))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cut_w_range": (10, 2)}, r"cut_w_range=\[10, 2\]"),
        ({"amplitude_range": (-1.0, 1.0)}, "amplitude_range"),
        ({"probability": 1.5}, "probability=1.5"),
    ],
)
def test_generator_rejects_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(HdmapError, match=message):
        CutPasteGenerator(**kwargs)


def test_target_position_falls_back_when_every_position_overlaps() -> None:
    torch.manual_seed(0)
    assert target_position(4, 10, 3, 8, (0, 1)) != (0, 1)
    assert target_position(4, 10, 1, 8, (0, 1))[0] != 0  # a non-overlapping row exists: used


def test_model_is_one_channel_with_configurable_widths() -> None:
    model = DraemCutPasteModel(reconstructive_width=4, discriminative_width=8)
    assert model.reconstructive_subnetwork.encoder.block1[0].in_channels == 1
    assert model.discriminative_subnetwork.encoder_segment.block1[0].in_channels == 2
    assert model.discriminative_subnetwork.encoder_segment.block1[0].out_channels == 8
    images = torch.rand(2, 3, 32, 96)
    reconstruction, logits = model(images)
    assert reconstruction.shape == (2, 1, 32, 96) and logits.shape == (2, 2, 32, 96)
    model.eval()
    output = model(images)
    assert output.pred_score.shape == (2,) and output.anomaly_map.shape == (2, 32, 96)
    assert torch.allclose(output.pred_score, output.anomaly_map.flatten(1).amax(1))
    other_channels = images.clone()
    other_channels[:, 1:] = 0
    assert torch.equal(model(other_channels).pred_score, output.pred_score)  # only channel 0 is used


def test_loss_is_l2_plus_two_ssim_plus_focal_with_alpha() -> None:
    torch.manual_seed(0)
    clean, reconstruction = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    logits = torch.randn(2, 2, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 4:8, 4:20] = 1
    loss = DraemFocalLoss(focal_alpha=0.9)
    terms = loss.terms(clean, reconstruction, mask, logits)
    assert set(terms) == {"l2", "ssim", "focal"}
    assert terms["l2"] == pytest.approx(float(((clean - reconstruction) ** 2).mean()))
    assert terms["ssim"] == pytest.approx(2 * float(loss.ssim_loss(reconstruction, clean)))
    assert loss(clean, reconstruction, mask, logits) == pytest.approx(float(sum(terms.values())))
    normal_only = torch.zeros_like(mask)
    assert DraemFocalLoss(focal_alpha=1.0).terms(clean, reconstruction, normal_only, logits)["focal"] == 0
    assert DraemFocalLoss(focal_alpha=0.5).terms(clean, reconstruction, normal_only, logits)["focal"] > 0


def test_bad_image_size_and_alpha_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(HdmapError, match="focal_alpha=1.5"):
        build_model(compose_cfg([*TINY, "model.module.focal_alpha=1.5"], tmp_path).model)
    model = build_model(compose_cfg(TINY, tmp_path).model)
    with pytest.raises(HdmapError, match="divisible by 32.*31x95"):
        model.training_step(ImageBatch(image=torch.rand(2, 3, 31, 95)))


def test_validation_logs_loss_and_auroc_without_touching_batchnorm(tiny_dataset: Path, tmp_path: Path) -> None:
    model = build_model(compose_cfg(TINY, tmp_path).model)
    assert isinstance(model, DraemCutPaste)
    metrics, again = validate_twice(model, tiny_dataset, eval_batch_size=4)
    assert metrics["val_loss"] > 0 and 0.0 <= metrics["val_image_AUROC"] <= 1.0
    assert again == pytest.approx(metrics)  # the same seeded faults in the same images every time
    assert model._validation_labels and torch.cat(model._validation_labels).tolist() == [1, 0] * 5


@pytest.mark.slow
def test_draem_cutpaste_end_to_end(tiny_dataset: Path, tmp_path: Path) -> None:
    run(tiny_run_cfg("draem_cutpaste", tiny_dataset, tmp_path), tmp_path)
    record = assert_complete_record(tmp_path, "draem_cutpaste")
    info = record["training_info"]
    assert info["monitor"] == "val_loss" and len(info["val_loss_per_epoch"]) == info["last_trained_epoch"] == 2
