"""Pretrained weights come from the local Hugging Face cache only; the real timm/anomalib path loads them."""

import hashlib
import http.server
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hdmap_train.models import build_model
from hdmap_train.train import run
from hdmap_train.weights import (
    MissingWeightsError,
    pretrained_source,
    published,
    require_pretrained,
    weights_record,
    write_random_weights,
)
from helpers.config import CONF_DIR, compose_cfg
from helpers.runs import assert_complete_record, tiny_run_cfg


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
        "python -m hdmap_train.weights model=patchcore",
        "weights=random",
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


MODELS = sorted(path.stem for path in (CONF_DIR / "model").glob("*.yaml"))


def pretrained_flags(node) -> list:
    """Every value of a key named pre_trained anywhere in a resolved config."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "pre_trained"] + [f for v in node.values() for f in pretrained_flags(v)]
    return [f for v in node for f in pretrained_flags(v)] if isinstance(node, list) else []


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_every_model_runs_with_random_weights_on_empty_caches(
    model: str, tiny_dataset: Path, tmp_path: Path, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no torchvision file either
    run(tiny_run_cfg(model, tiny_dataset, tmp_path / "run", "weights=random"), tmp_path / "run")
    record = assert_complete_record(tmp_path / "run", model)
    assert record["weights"] == {"mode": "random", "pre_trained": False, "files": []}
    assert True not in pretrained_flags(record["condition"]["config"])
    assert record["condition"]["config"]["model"]["random_weights"] is True
    assert not list(tmp_path.glob("hub/*")) and not (tmp_path / "torch").exists()  # nothing fetched or written


def test_random_weights_are_seeded_and_not_the_cached_ones(tmp_path: Path, hf_cache: Path) -> None:
    path = write_random_weights("resnet18", hf_cache, seed=3)
    states = []
    for weights in ("random", "random", "pretrained"):
        cfg = compose_cfg(["model=patchcore", "size=tiny", f"weights={weights}"], tmp_path)
        torch.manual_seed(cfg.seed)
        states.append(build_model(cfg.model).model.feature_extractor.feature_extractor.state_dict())
    key = "layer2.0.conv1.weight"
    assert torch.equal(states[0][key], states[1][key])  # seeded
    assert torch.equal(states[2][key], load_file(path)[key])
    assert not torch.equal(states[0][key], states[2][key])


class StandInHub(http.server.SimpleHTTPRequestHandler):
    """A local folder served as the Hugging Face hub: <org>/<repo>/<file> answers /<org>/<repo>/resolve/<rev>/<file>."""

    def translate_path(self, path: str) -> str:
        parts = path.split("?")[0].strip("/").split("/")  # org, repo, "resolve", revision, file...
        return str(Path(self.server.root, *parts[:2], *parts[4:]))  # type: ignore[attr-defined]

    def end_headers(self) -> None:
        self.send_header("X-Repo-Commit", "1" * 40)
        self.send_header("ETag", '"stand-in"')
        served = Path(self.translate_path(self.path))
        if served.is_file():  # as the hub answers for a Git LFS file: its sha256
            self.send_header("X-Linked-Etag", f'"{hashlib.sha256(served.read_bytes()).hexdigest()}"')
            self.send_header("X-Linked-Size", str(served.stat().st_size))
        super().end_headers()

    def log_message(self, *args) -> None:
        pass


def download_cli(tmp_path: Path, endpoint: str, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub")}
    return subprocess.run([sys.executable, "-m", "hdmap_train.weights", *overrides], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_download_fetches_backbones_from_a_stand_in_hub_into_the_cache(tmp_path: Path, hf_cache: Path) -> None:
    served = write_random_weights("resnet18", tmp_path / "served_cache", seed=5)  # the file the hub serves
    repo, filename = pretrained_source("resnet18")
    (tmp_path / "hub_root" / repo).mkdir(parents=True)
    shutil.copy(served, tmp_path / "hub_root" / repo / filename)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandInHub)
    server.root = tmp_path / "hub_root"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = download_cli(tmp_path, f"http://127.0.0.1:{server.server_port}", "model=[patchcore,draem]", "size=cpu")
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    cached = require_pretrained("resnet18", "patchcore")  # hf_cache is tmp_path/hub: what a run reads offline
    assert f"patchcore: timm resnet18 -> {cached}" in done.stdout
    assert "draem: no pretrained weights needed" in done.stdout
    assert load_file(cached).keys() == load_file(served).keys()
    assert torch.equal(load_file(cached)["fc.weight"], load_file(served)["fc.weight"])
    model = compose_cfg(["model=patchcore", "size=cpu"], tmp_path).model
    record = weights_record(model)  # a file the hub served, unchanged since: verified
    assert record["mode"] == "pretrained" and record["pre_trained"] is True and record["files"][0]["published"] is True
    cached.resolve().write_bytes(b"changed after download")
    record = weights_record(model)
    assert record["mode"] == "unverified" and record["pre_trained"] is False and record["files"][0]["published"] is False


def test_weights_planted_in_the_cache_are_not_called_pretrained(tmp_path: Path, hf_cache: Path, caplog) -> None:
    path = write_random_weights("resnet18", hf_cache)  # a file in the snapshot folder, not one the hub served
    with caplog.at_level(logging.WARNING, logger="hdmap_train.weights"):
        record = weights_record(compose_cfg(["model=patchcore", "size=cpu"], tmp_path).model)
    assert record["mode"] == "unverified" and record["pre_trained"] is False
    assert record["files"][0]["published"] is None and record["files"][0]["path"] == str(path)
    assert "is not known to be the published pretrained file" in caplog.text and "weights.mode=unverified" in caplog.text


def test_torch_hub_files_are_checked_against_the_hash_in_their_name(tmp_path: Path) -> None:
    content = b"torchvision weights"
    sha256 = hashlib.sha256(content).hexdigest()
    good, bad = tmp_path / f"resnet18-{sha256[:8]}.pth", tmp_path / "resnet18-00000000.pth"
    for path in (good, bad):
        path.write_bytes(content)
    assert published(good, sha256)[0] is True and published(bad, sha256)[0] is False
    assert published(tmp_path / "teacher_small.pth", sha256)[0] is None  # nothing published to check against


def test_download_without_network_fails_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    failed = download_cli(tmp_path, f"http://127.0.0.1:{port}", "model=patchcore", "size=cpu")
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Download failed") and "weights=random" in lines[0]
    assert not list((tmp_path / "hub").rglob("*.safetensors"))


def test_download_names_its_usage_without_a_model(tmp_path: Path) -> None:
    failed = download_cli(tmp_path, "http://127.0.0.1:9")
    assert failed.returncode == 2 and "error: model= is required" in failed.stderr
