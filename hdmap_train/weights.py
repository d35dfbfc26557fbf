"""Pretrained weights: read from local caches at run time, downloaded only by `python -m hdmap_train.weights`.

anomalib builds its backbones with ``timm.create_model(name, pretrained=True)``; timm then loads
``<hf_hub_id>/model.safetensors`` (falling back to ``pytorch_model.bin``) through huggingface_hub,
which with ``HF_HUB_OFFLINE=1`` reads ``<cache>/models--<org>--<repo>/snapshots/<rev>/<file>``. UniNet's
teachers read torchvision's ImageNet file from ``$TORCH_HOME/hub/checkpoints``, EfficientAD its teacher from
``model.module.teacher_weights``. ``weights=random`` (``model.random_weights``) reads none of them.

``python -m hdmap_train.weights model=<name>|all [overrides]`` is the one command that uses the
network: it fetches what the composed model config needs into those caches and prints where. timm, torch,
torchvision and huggingface_hub are imported where they are used, so the command answers its usage errors at once.
"""

import hashlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig

from hdmap_train.errors import HdmapError

log = logging.getLogger(__name__)
DOWNLOAD_HINT = "python -m hdmap_train.weights model={model}"


class MissingWeightsError(HdmapError, RuntimeError):
    """Pretrained weights are not in the local cache."""


def _hub_cache_dir() -> Path:
    """The hub cache directory, from the environment now (huggingface_hub reads it once, at import)."""
    env = os.environ
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def _candidates(timm_name: str) -> tuple[str, list[str]]:
    """(hf_hub_id, files in the order timm tries them) for the model's default pretrained tag."""
    from timm.models import get_pretrained_cfg
    from timm.models._hub import HF_WEIGHTS_NAME, _get_safe_alternatives

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
    from huggingface_hub import try_to_load_from_cache

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
        f"To fix, run `{DOWNLOAD_HINT.format(model=model_name)}` once where there is network "
        f"(or `python -c \"import timm; timm.create_model('{timm_name}', pretrained=True)\"`) and copy its cache "
        f"directory (~/.cache/huggingface/hub) to {cache}, or set HF_HOME (or HF_HUB_CACHE) to a cache that "
        f"already has it; or try the pipeline without them: weights=random."
    )
    raise MissingWeightsError(msg)


def torchvision_weights_file(backbone: str) -> Path:
    """Where torchvision looks for `backbone`'s default ImageNet weights: <torch hub dir>/checkpoints/<file>."""
    import torch
    import torchvision

    weights = torchvision.models.get_model_weights(backbone).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def require_torchvision(backbone: str, model_name: str) -> Path:
    """Path of torchvision's cached ImageNet weights for ``backbone``; MissingWeightsError if absent. No network."""
    import torchvision

    path = torchvision_weights_file(backbone)
    if not path.is_file():
        url = torchvision.models.get_model_weights(backbone).DEFAULT.url
        msg = (
            f"Model '{model_name}' needs torchvision's ImageNet weights file {path.name} for '{backbone}', which is "
            f"not in {path.parent} (the torch hub cache; set TORCH_HOME to use another). Training never downloads. "
            f"To fix, run `{DOWNLOAD_HINT.format(model=model_name)}` (or download {url} on a machine with network "
            f"and copy it to {path}); or try the pipeline without it: weights=random."
        )
        raise MissingWeightsError(msg)
    return path


def weight_files(model_cfg: DictConfig) -> dict[str, Path]:
    """{what: path} of every pretrained file the model reads (timm backbone, torchvision teachers, EfficientAD's
    teacher); MissingWeightsError naming the fix when a cached one is missing. Nothing for weights=random.
    """
    if model_cfg.get("random_weights", False):
        return {}
    module, files = model_cfg.module, {}
    if model_cfg.get("pretrained_backbone"):
        repo, _ = _candidates(model_cfg.pretrained_backbone)
        files[f"timm {model_cfg.pretrained_backbone} ({repo})"] = require_pretrained(
            model_cfg.pretrained_backbone, model_cfg.name)
    if module.get("teacher_backbone"):
        files[f"torchvision {module.teacher_backbone}"] = require_torchvision(module.teacher_backbone, model_cfg.name)
    if module.get("teacher_weights"):  # EfficientAD checks the file itself (with its imagenet_dir) when built
        files["teacher"] = Path(module.teacher_weights)
    return files


def published(path: Path, sha256: str) -> tuple[bool | None, str]:
    """Is the file the one its publisher released? (True/False, or None where nothing published says; how it was checked.)

    The Hugging Face cache keeps a downloaded weight file (a Git LFS file) as ``blobs/<sha256 the hub served>`` behind
    the snapshot's link; torch hub files (torchvision's) are named ``<name>-<first hex digits of their sha256>.pth``.
    """
    blob = path.resolve()
    if path.is_symlink() and blob.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", blob.name):
        if blob.name == sha256:
            return True, "sha256 equals the one the Hugging Face hub served (its cache blob name)"
        return False, f"sha256 differs from the {blob.name[:12]}... the Hugging Face hub served: the file changed after download"
    prefix = re.search(r"-([0-9a-f]{8,64})\.pth$", path.name)  # torch hub's check_hash convention
    if prefix:
        if sha256.startswith(prefix.group(1)):
            return True, f"sha256 starts with the {prefix.group(1)} of its published file name"
        return False, f"sha256 does not start with the {prefix.group(1)} of its published file name: not the published file"
    return None, "no published sha256 to check against (not a Hugging Face hub download, no hash in its name)"


def weights_record(model_cfg: DictConfig) -> dict:
    """metrics.json `weights`: mode "random" (weights=random), "none" (a model trained from scratch), "pretrained"
    (every file is the published one: `published`) or "unverified" (a file that is not, or cannot be checked), with
    each file's path, sha256, `published` and `check`; `pre_trained` is true only for "pretrained". A warning names
    each file that is not known to be the published one.
    """
    if model_cfg.get("random_weights", False):
        return {"mode": "random", "pre_trained": False, "files": []}
    files = []
    for what, path in weight_files(model_cfg).items():
        sha256 = _sha256(path)
        verdict, check = published(path, sha256)
        files.append({"what": what, "path": str(path), "sha256": sha256, "published": verdict, "check": check})
        if verdict is not True:
            log.warning("weights: %s (%s) is not known to be the published pretrained file: %s; recorded as "
                        "weights.mode=unverified", what, path, check)
    mode = "none" if not files else "pretrained" if all(f["published"] is True for f in files) else "unverified"
    return {"mode": mode, "pre_trained": mode == "pretrained", "files": files}


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@contextmanager
def random_initialisation() -> Iterator[None]:
    """Models that timm and torchvision create inside keep their random initial weights: no pretrained file is read.

    For anomalib models that build a pretrained backbone without a ``pre_trained`` argument (Dinomaly, STFPM,
    SuperSimpleNet, UniNet's torchvision teachers); weights=random uses it for every model.
    """
    import timm
    import torchvision

    create_model, get_model_weights = timm.create_model, torchvision.models.get_model_weights

    def create_random(*args, **kwargs):
        return create_model(*args, **{**kwargs, "pretrained": False})

    timm.create_model = create_random
    torchvision.models.get_model_weights = lambda name: type("NoWeights", (), {"DEFAULT": None})
    try:
        yield
    finally:
        timm.create_model, torchvision.models.get_model_weights = create_model, get_model_weights


def write_random_weights(timm_name: str, cache_dir: Path, seed: int = 0) -> Path:
    """Test helper: save seeded randomly initialised weights for ``timm_name`` where the hub cache ``cache_dir`` has them."""
    import timm
    import torch
    from safetensors.torch import save_file

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


def model_configs(model, overrides: list[str]) -> list[DictConfig]:
    """The composed `model` config of each model named by `model` (a name, a list, or `all`) with the overrides."""
    from hydra import compose, initialize_config_dir

    from hdmap_train.catalog import CONF_DIR, model_entries

    chosen = model if isinstance(model, list) else [model]
    names = [entry.name for entry in model_entries()] if model == "all" else [str(name) for name in chosen]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return [compose(config_name="train", overrides=[f"model={name}", *overrides]).model for name in names]


def fetch(model_cfg: DictConfig) -> dict[str, Path]:
    """Download what `model_cfg` reads into the local caches; {what: path}."""
    import torch
    import torchvision
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    module, found = model_cfg.module, {}
    if model_cfg.get("pretrained_backbone"):
        repo, files = _candidates(model_cfg.pretrained_backbone)
        for file in files:  # timm's order: safetensors first
            try:
                found[f"timm {model_cfg.pretrained_backbone}"] = Path(hf_hub_download(repo, file, cache_dir=_hub_cache_dir()))
                break
            except EntryNotFoundError:
                if file == files[-1]:
                    raise
    if module.get("teacher_backbone"):
        path = torchvision_weights_file(module.teacher_backbone)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(torchvision.models.get_model_weights(module.teacher_backbone).DEFAULT.url, str(path))
        found[f"torchvision {module.teacher_backbone}"] = path
    if module.get("teacher_weights"):
        from anomalib.data.utils import download_and_extract
        from anomalib.models.image.efficient_ad.lightning_model import IMAGENETTE_DOWNLOAD_INFO, WEIGHTS_DOWNLOAD_INFO

        teacher = Path(module.teacher_weights)
        if not teacher.is_file():  # the zip unpacks into <dir>/efficientad_pretrained_weights/
            download_and_extract(teacher.parent.parent, WEIGHTS_DOWNLOAD_INFO)
        found["teacher"] = teacher
        if not Path(module.imagenet_dir).is_dir():
            download_and_extract(Path(module.imagenet_dir), IMAGENETTE_DOWNLOAD_INFO)
        found["penalty images"] = Path(module.imagenet_dir)
    return found


def download(options: dict, overrides: list) -> int:
    """Fetch each chosen model's files into the local caches, one line per file; 1 on failure (one line)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import logging as hub_logging

    constants.HF_HUB_OFFLINE = False  # hdmap_train sets HF_HUB_OFFLINE=1 for every other command
    hub_logging.set_verbosity_error()  # its retry warnings: the failure is one line below
    try:
        configs = model_configs(options["model"], [o.input_line for o in overrides])
    except Exception as exc:  # an unknown model or override
        raise HdmapError(" ".join(str(exc).split())) from None
    try:
        for model_cfg in configs:
            files = fetch(model_cfg)
            for what, path in files.items():
                print(f"{model_cfg.name}: {what} -> {path}")
            if not files:
                print(f"{model_cfg.name}: no pretrained weights needed (trains from scratch)")
    except Exception as exc:  # one line: what failed and what to do
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise HdmapError(f"Download failed ({type(exc).__name__}: {reason}). This command needs network access to the "
                         f"Hugging Face hub ({constants.ENDPOINT}) or the file's URL; without one, copy the caches "
                         f"(~/.cache/huggingface, ~/.cache/torch) from a machine that has them, or use weights=random.") from None
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m hdmap_train.weights model=<name>|[a,b]|all [overrides]`: one line per file, exit 1 on failure."""
    from hdmap_train.arguments import Command, Key, run_command

    command = Command(
        "weights", "Download the pretrained weights that models read, into the local caches (~/.cache/huggingface, "
        "~/.cache/torch): the one command that uses the network (HF_ENDPOINT selects a mirror). Training, evaluation and sweeps "
        "never download.",
        (Key("model", "a model name, a list [patchcore,padim], or all", required=True),),
        ("model=patchcore", "model=all size=cpu"), overrides="config overrides of the composed model, e.g. size=cpu",
        dropped=("download",))  # the older `weights download model=...`: download is what the command does
    return run_command(command, download, argv)


if __name__ == "__main__":
    sys.exit(main())
