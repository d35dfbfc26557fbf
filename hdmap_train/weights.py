"""Pretrained backbone weights: found in the local Hugging Face cache, never downloaded.

anomalib builds its backbones with ``timm.create_model(name, pretrained=True)``; timm then loads
``<hf_hub_id>/model.safetensors`` (falling back to ``pytorch_model.bin``) through huggingface_hub,
which with ``HF_HUB_OFFLINE=1`` reads ``<cache>/models--<org>--<repo>/snapshots/<rev>/<file>``.
"""

import os
from pathlib import Path

import timm
import torch
from huggingface_hub import try_to_load_from_cache
from safetensors.torch import save_file
from timm.models import get_pretrained_cfg
from timm.models._hub import HF_WEIGHTS_NAME, _get_safe_alternatives

from hdmap_train.errors import HdmapError


class MissingWeightsError(HdmapError, RuntimeError):
    """Pretrained weights are not in the local Hugging Face cache."""


def _hub_cache_dir() -> Path:
    """The hub cache directory, from the environment now (huggingface_hub reads it once, at import)."""
    env = os.environ
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def _candidates(timm_name: str) -> tuple[str, list[str]]:
    """(hf_hub_id, files in the order timm tries them) for the model's default pretrained tag."""
    cfg = get_pretrained_cfg(timm_name, allow_unregistered=False)
    if not cfg.hf_hub_id:
        msg = f"timm model '{timm_name}' has no Hugging Face hub weights (pretrained tag '{cfg.tag}')."
        raise ValueError(msg)
    name = cfg.hf_hub_filename or HF_WEIGHTS_NAME
    files = [name] if name.endswith(".safetensors") else [*_get_safe_alternatives(name), name]
    return cfg.hf_hub_id, files


def pretrained_source(timm_name: str) -> tuple[str, str]:
    """(hf_hub_id, filename) timm would load for this model name (default tag resolved)."""
    hub_id, files = _candidates(timm_name)
    return hub_id, files[0]


def require_pretrained(timm_name: str, model_name: str) -> Path:
    """Path of the cached weight file for ``timm_name``; MissingWeightsError if not cached. No network."""
    repo, files = _candidates(timm_name)
    cache = _hub_cache_dir()
    for file in files:
        found = try_to_load_from_cache(repo, file, cache_dir=cache)
        if isinstance(found, str):
            return Path(found)
    msg = (
        f"Pretrained weights for model '{model_name}' are not available offline: its timm backbone "
        f"'{timm_name}' needs file '{files[0]}' from Hugging Face repo '{repo}', which is not in the "
        f"cache directory {cache} (resolved from HF_HUB_CACHE / HF_HOME). Training never downloads. "
        f"To fix, on a machine with network run "
        f"`python -c \"import timm; timm.create_model('{timm_name}', pretrained=True)\"` "
        f"(or `hf download {repo} {files[0]}`) and copy its cache directory (~/.cache/huggingface/hub) "
        f"to {cache}, or set HF_HOME (or HF_HUB_CACHE) to a cache that already has it."
    )
    raise MissingWeightsError(msg)


def write_random_weights(timm_name: str, cache_dir: Path, seed: int = 0) -> Path:
    """Test helper: save seeded randomly initialised weights for ``timm_name`` where the hub cache ``cache_dir`` has them."""
    repo, filename = pretrained_source(timm_name)
    with torch.random.fork_rng(devices=[]):  # timm's own random initialisation, seeded: finite activations
        torch.manual_seed(seed)
        state = {k: v.contiguous() for k, v in timm.create_model(timm_name, pretrained=False).state_dict().items()}
    repo_dir = Path(cache_dir) / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40  # snapshot folders are named by commit hash; refs/main points to it
    path = repo_dir / "snapshots" / commit / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return path
