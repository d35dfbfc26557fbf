"""Pretrained weights come from the local Hugging Face cache only; the real timm/anomalib path loads them."""

import pytest
import torch
from safetensors.torch import load_file

from hdmap_train.weights import (
    MissingWeightsError,
    pretrained_source,
    require_pretrained,
    write_random_weights,
)


def test_sources_resolve_default_tags():
    assert pretrained_source("wide_resnet50_2") == ("timm/wide_resnet50_2.racm_in1k", "model.safetensors")
    assert pretrained_source("resnet18") == ("timm/resnet18.a1_in1k", "model.safetensors")
    assert pretrained_source("vit_small_patch14_reg4_dinov2") == (
        "timm/vit_small_patch14_reg4_dinov2.lvd142m",
        "model.safetensors",
    )


def test_missing_weights_message_names_model_repo_file_and_fix(hf_cache):
    with pytest.raises(MissingWeightsError) as info:
        require_pretrained("wide_resnet50_2", "patchcore")
    msg = str(info.value)
    for part in (
        "'patchcore'",
        "'wide_resnet50_2'",
        "timm/wide_resnet50_2.racm_in1k",
        "model.safetensors",
        str(hf_cache),
        "timm.create_model('wide_resnet50_2', pretrained=True)",
        "HF_HOME",
    ):
        assert part in msg
    assert "\n" not in msg


def test_patchcore_backbone_loads_cached_file_offline(hf_cache):
    from anomalib.models.components import TimmFeatureExtractor

    path = write_random_weights("resnet18", hf_cache, seed=3)
    assert require_pretrained("resnet18", "patchcore") == path
    extractor = TimmFeatureExtractor(backbone="resnet18", layers=["layer2", "layer3"], pre_trained=True)
    key = "layer2.0.conv1.weight"
    assert torch.equal(extractor.feature_extractor.state_dict()[key], load_file(path)[key])


def test_dinomaly_encoder_loads_cached_file_offline(hf_cache):
    from anomalib.models.image.dinomaly.torch_model import DinomalyModel

    name = "vit_small_patch14_reg4_dinov2"
    path = write_random_weights(name, hf_cache)
    assert require_pretrained(name, "dinomaly") == path
    encoder = DinomalyModel(encoder_name=name).encoder.feature_extractor  # timm.create_model(pretrained=True)
    key = "blocks.0.attn.qkv.weight"
    assert torch.equal(encoder.state_dict()[key], load_file(path)[key])
