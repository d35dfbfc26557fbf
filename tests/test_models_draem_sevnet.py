"""DRAEM-SevNet: severity head modes, score combination, generator geometry, loss terms, validation."""

from pathlib import Path

import pytest
import torch

from hdmap_train.data.cutpaste import SeverityCutPasteGenerator
from hdmap_train.errors import HdmapError
from hdmap_train.models import build_model
from hdmap_train.models.draem_sevnet import DraemSevNet, DraemSevNetLoss, DraemSevNetModel, SeverityHead, combine_scores
from hdmap_train.train import run
from helpers.config import compose_cfg
from helpers.runs import assert_complete_record, tiny_run_cfg, validate_twice

TINY = ["model=draem_sevnet", "size=tiny"]


def activations(batch: int, width: int, size: int = 64) -> dict[str, torch.Tensor]:
    """Discriminative-encoder activations act1..act6 of a size x size input."""
    mult = {1: 1, 2: 2, 3: 4, 4: 8, 5: 8, 6: 8}
    return {f"act{i}": torch.randn(batch, m * width, size >> (i - 1), size >> (i - 1)) for i, m in mult.items()}


@pytest.mark.parametrize("mode", ["single_scale", "multi_scale"])
@pytest.mark.parametrize("pooling", ["gap", "spatial_aware"])
@pytest.mark.parametrize("attention", [True, False])
def test_severity_head_gives_one_value_per_image(mode: str, pooling: str, attention: bool) -> None:
    head = SeverityHead(8, mode=mode, pooling=pooling, hidden_dim=16, spatial_size=2, spatial_attention=attention)
    assert head(activations(3, 8)).shape == (3,)
    first_linear = head.mlp[0]
    if pooling == "gap":
        assert first_linear.in_features == (8 * 8 if mode == "single_scale" else 30 * 8)  # 512 / 1920 at width 64
    else:
        assert first_linear.in_features == (16 if mode == "single_scale" else 480) * 2 * 2
        assert first_linear.out_features == (16 if mode == "single_scale" else 32)
        assert all((reducer.attention is not None) == attention for reducer in head.reducers.values())
    assert torch.all(first_linear.bias == 0)


def test_severity_head_paper_dimensions() -> None:
    assert SeverityHead(64, mode="multi_scale").mlp[0].in_features == 1920
    assert SeverityHead(64, mode="single_scale").mlp[0].in_features == 512


@pytest.mark.parametrize("mode", ["single_scale", "multi_scale"])
@pytest.mark.parametrize("pooling", ["gap", "spatial_aware"])
def test_model_outputs_in_training_and_eval(mode: str, pooling: str) -> None:
    model = DraemSevNetModel(4, 4, head={"mode": mode, "pooling": pooling, "hidden_dim": 8}, severity_max=2.0)
    images = torch.rand(2, 3, 64, 64)
    reconstruction, logits, severity = model(images)
    assert reconstruction.shape == (2, 3, 64, 64) and logits.shape == (2, 2, 64, 64) and severity.shape == (2,)
    model.eval()
    out = model.outputs(images)
    assert out.anomaly_map.shape == (2, 64, 64) and out.final_score.shape == (2,)
    assert torch.allclose(out.mask_score, out.anomaly_map.flatten(1).amax(1))
    assert torch.all(out.raw_severity >= 0) and torch.all((0 <= out.normalized_severity) & (out.normalized_severity <= 1))
    assert torch.allclose(out.normalized_severity, (out.raw_severity / 2.0).clamp(max=1))
    inference = model(images)
    assert torch.equal(inference.pred_score, out.final_score)


def test_one_channel_variant_uses_channel_zero() -> None:
    model = DraemSevNetModel(4, 4, channels=1, head={"hidden_dim": 8}).eval()
    images = torch.rand(2, 3, 32, 32)
    changed = images.clone()
    changed[:, 1:] = 0
    assert model.reconstructive_subnetwork.encoder.block1[0].in_channels == 1
    assert torch.equal(model(images).pred_score, model(changed).pred_score)


def test_score_combination_formulas() -> None:
    mask, severity = torch.tensor([0.2, 0.9]), torch.tensor([0.6, 0.1])
    assert torch.allclose(combine_scores(mask, severity, "simple_average", 0.3), torch.tensor([0.4, 0.5]))
    assert torch.allclose(combine_scores(mask, severity, "weighted_average", 0.25), torch.tensor([0.3, 0.7]))
    assert torch.allclose(combine_scores(mask, severity, "maximum", 0.3), torch.tensor([0.6, 0.9]))
    with pytest.raises(ValueError, match="score combination"):
        combine_scores(mask, severity, "median", 0.3)


def test_generator_landscape_patches_are_wide_and_severity_is_the_injected_amplitude() -> None:
    torch.manual_seed(0)
    generator = SeverityCutPasteGenerator(patch_width_range=(20, 40), patch_ratio_range=(2.0, 4.0), severity_max=3.0)
    clean = torch.rand(16, 1, 64, 96) + 0.1
    faults = generator(clean, faulted=torch.ones(16, dtype=torch.bool))
    for image, fault, mask, severity in zip(clean, faults.images, faults.masks, faults.amplitudes, strict=True):
        rows, cols = torch.nonzero(mask[0], as_tuple=True)
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert width > height and round(width / 4.0) <= height <= round(width / 2.0)  # ratio = width / height
        assert 20 <= width <= 40 and 0 <= severity <= 3.0
        added = fault - image
        assert torch.all(added[mask == 0] == 0)
        assert added.max() == pytest.approx(float(severity), rel=1e-5)  # signature = patch / max|patch| * severity


def test_generator_portrait_ratio_gives_tall_patches_capped_at_the_image_height() -> None:
    torch.manual_seed(0)
    generator = SeverityCutPasteGenerator(patch_width_range=(4, 8), patch_ratio_range=(0.25, 0.5))
    faults = generator(torch.rand(8, 1, 32, 96), faulted=torch.ones(8, dtype=torch.bool))
    for mask in faults.masks:
        rows, cols = torch.nonzero(mask[0], as_tuple=True)
        assert rows.max() - rows.min() > cols.max() - cols.min() and rows.max() - rows.min() + 1 <= 31


def test_generator_leaves_clean_images_untouched_with_zero_severity() -> None:
    torch.manual_seed(3)
    clean = torch.rand(64, 1, 32, 96)
    faults = SeverityCutPasteGenerator(patch_width_range=(10, 30), probability=0.5)(clean)
    normal = faults.labels == 0
    assert 0 < normal.sum() < 64
    assert torch.equal(faults.images[normal], clean[normal])
    assert faults.masks[normal].sum() == 0 and torch.all(faults.amplitudes[normal] == 0)
    assert torch.all(faults.amplitudes[~normal] > 0)


def test_generator_rejects_patches_wider_than_the_image() -> None:
    with pytest.raises(HdmapError, match="patch_width_range below 96"):
        SeverityCutPasteGenerator(patch_width_range=(20, 100))(torch.rand(1, 1, 32, 96))
    with pytest.raises(HdmapError, match="patch_ratio_range"):
        SeverityCutPasteGenerator(patch_ratio_range=(0.0, 2.0))


@pytest.mark.parametrize(("kind", "expected"), [("mse", 0.5), ("smooth_l1", 0.25)])
def test_loss_adds_weighted_severity_term(kind: str, expected: float) -> None:
    torch.manual_seed(0)
    clean, reconstruction = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    logits, mask = torch.randn(2, 2, 32, 32), torch.zeros(2, 1, 32, 32)
    severity, label = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])  # errors 1 and 0
    loss = DraemSevNetLoss(severity_weight=0.25, severity_loss=kind)
    terms = loss.sevnet_terms(clean, reconstruction, mask, logits, severity, label)
    draem = terms["l2"] + terms["ssim"] + terms["focal"]
    assert terms["severity"] == pytest.approx(expected)  # mean over the errors (1, 0)
    total = loss(clean, reconstruction, mask, logits, severity, label)
    assert total == pytest.approx(float(draem + 0.25 * terms["severity"]))


def test_bad_choices_fail_clearly(tmp_path: Path) -> None:
    for override, message in [("severity_head_mode=triple", "severity_head_mode=triple"), ("optimizer=lbfgs", "optimizer")]:
        with pytest.raises(HdmapError, match=message):
            build_model(compose_cfg([*TINY, f"model.module.{override}"], tmp_path).model)


def test_validation_in_eval_mode_leaves_batchnorm_alone(tiny_dataset: Path, tmp_path: Path) -> None:
    model = build_model(compose_cfg([*TINY, "model.module.severity_head_mode=multi_scale"], tmp_path).model)
    assert isinstance(model, DraemSevNet)
    metrics, again = validate_twice(model, tiny_dataset, eval_batch_size=4)
    assert metrics["val_loss"] > 0 and 0.0 <= metrics["val_image_AUROC"] <= 1.0
    assert again == pytest.approx(metrics)


@pytest.mark.slow
def test_draem_sevnet_end_to_end(tiny_dataset: Path, tmp_path: Path) -> None:
    run(tiny_run_cfg("draem_sevnet", tiny_dataset, tmp_path), tmp_path)
    record = assert_complete_record(tmp_path, "draem_sevnet")
    info = record["training_info"]
    assert info["monitor"] == "val_loss" and len(info["val_loss_per_epoch"]) == info["last_trained_epoch"] == 2
