"""Shared fixtures: a tiny synthetic dataset and an offline Hugging Face cache (helpers live in tests/helpers/)."""

import socket
from pathlib import Path

import pytest
from huggingface_hub import constants

from hdmap_train.data.synthetic import ensure_dataset
from helpers.config import TINY_SPEC


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic HDMAP dataset (40 train, 12+12 test per domain), generated once per session."""
    return ensure_dataset(TINY_SPEC, tmp_path_factory.mktemp("data"))


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, offline hub cache; any network connection fails the test."""
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub read these at import time and timm passes no cache_dir: patch the constants too.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    return cache
