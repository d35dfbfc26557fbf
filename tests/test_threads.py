"""`threads=`: torch's default, a number, or the cores a busy machine leaves idle."""

import os

import pytest

from hdmap_train.checks import check_config
from hdmap_train.errors import HdmapError
from hdmap_train.threads import torch_threads
from helpers.config import compose_cfg


def test_threads_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert torch_threads(None) is None and torch_threads(3) == 3
    monkeypatch.setattr(os, "getloadavg", lambda: (2.6, 0.0, 0.0))
    assert torch_threads("auto") == 1  # 4 cores, 2.6 busy: one left
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert torch_threads("auto") == 4
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert torch_threads("auto") == 1


def test_bad_threads_value_is_a_config_error(tmp_path) -> None:
    cfg = compose_cfg(["threads=0", "data=synthetic"], tmp_path)
    with pytest.raises(HdmapError, match="threads=0 must be a positive integer, auto or null"):
        check_config(cfg)
