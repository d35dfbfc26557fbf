"""Checkpoint identity, writing and loading.

Every checkpoint a run writes carries its result-relevant config and that config's hash (`STAMP`), so a
checkpoint of another config is never resumed or evaluated as this run's. The stamp is read without torch
and without running anything the file holds. Checkpoints are written atomically (a full disk leaves the
previous file, never a truncated one), and loading one into a run's model fails with one line naming why.
"""

import errno
import hashlib
import io
import json
import os
import pickle
import re
import zipfile
from pathlib import Path

from hdmap_train.errors import HdmapError
from hdmap_train.job_names import comparable_config, config_differences, drop_keys

STAMP = "hdmap_train_config"  # checkpoint key: {"hash": config_hash, "config": the comparable config}
# Write errors that mean "this storage takes no more": full, over quota, file too large, read-only, not allowed.
# Keys a resumed run may change: how long it trains, not what it trains (resume a run with more epochs).
RESUME_NEUTRAL_KEYS = ("model.max_epochs", "trainer.max_epochs")
STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)


def config_hash(config: dict) -> str:
    """A short hash of a resolved config dict without its result-neutral keys (equal configs, equal hashes)."""
    text = json.dumps(comparable_config(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_stamp(config: dict) -> dict:
    """What a checkpoint carries under STAMP: the config's hash and its comparable config (plain JSON types)."""
    return {"hash": config_hash(config), "config": json.loads(json.dumps(comparable_config(config), default=str))}


class _Stub:
    """Whatever a checkpoint's pickle names (tensors, classes): built from nothing, runs nothing."""

    def __new__(cls, *args, **kwargs):
        del args, kwargs
        return object.__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        del args, kwargs

    def __setstate__(self, state) -> None:
        del state

    def __setitem__(self, key, value) -> None:
        del key, value

    def append(self, value) -> None:
        del value

    def extend(self, values) -> None:
        del values


class _OrderedDict(dict):
    """collections.OrderedDict as a checkpoint pickles it (a dict with a __dict__ for its state)."""


class _StampReader(pickle.Unpickler):
    """An unpickler that imports nothing: plain containers load, every global is a _Stub, storages are None."""

    def find_class(self, module: str, name: str):
        return _OrderedDict if (module, name) == ("collections", "OrderedDict") else _Stub

    def persistent_load(self, pid):
        del pid


def read_stamp(path: Path) -> dict | None:
    """The STAMP of a torch checkpoint (None when it has none); zipfile/pickle/OS errors when it is unreadable."""
    with zipfile.ZipFile(path) as archive:
        name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
        if name is None:
            raise zipfile.BadZipFile("no data.pkl")
        data = _StampReader(io.BytesIO(archive.read(name))).load()
    stamp = data.get(STAMP) if isinstance(data, dict) else None
    return stamp if isinstance(stamp, dict) and isinstance(stamp.get("hash"), str) else None


def stamp_differences(stamp: dict | None, config: dict, neutral: tuple[str, ...] = ()) -> list[str] | None:
    """None when the stamp is of `config` (the `neutral` keys aside); else the differing keys ([] when unknown: no stamp).

    neutral: keys allowed to differ, e.g. RESUME_NEUTRAL_KEYS when resuming.
    """
    if stamp is None:
        return []
    if not isinstance(stamp.get("config"), dict):
        return None if stamp["hash"] == config_hash(config) else []
    ours = json.loads(json.dumps(comparable_config(config), default=str))
    return config_differences(drop_keys(ours, neutral), drop_keys(stamp["config"], neutral)) or None


def save_atomic(checkpoint: dict, path: str | Path) -> None:
    """torch.save to a temporary file beside `path`, then rename; a full or read-only disk is one HdmapError line."""
    import torch

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)  # in memory first: torch's own file writer reports a full disk as a RuntimeError
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(buffer.getbuffer())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno not in STORAGE_ERRORS:
            raise
        raise HdmapError(storage_message(exc, path)) from None


def storage_message(exc: OSError, path: str | Path | None = None) -> str:
    """One line for a write that the storage refused (full, read-only): what and the fix."""
    where = path or exc.filename or "a file"
    return (f"Cannot write {where} ({exc.strerror}): free disk space or choose a writable folder, then run the same "
            "command again (a training run resumes from its last complete checkpoint).")


def load_model(model_cfg: dict, checkpoint: Path):
    """The run's model (build_model of its model config) with the checkpoint's weights and pre-/post-processor, on
    the CPU; HdmapError with one line when the file is damaged, holds code, or was written by another model.
    """
    import torch
    from anomalib import PrecisionType
    from omegaconf import OmegaConf

    from hdmap_train.models import build_model

    try:  # PatchCore's hyper_parameters hold anomalib's PrecisionType (an Enum of strings): allowed by name, nothing else
        with torch.serialization.safe_globals([PrecisionType]):
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = found.group(1) if found else "pickled Python objects"
        raise HdmapError(f"Checkpoint {checkpoint} holds {what}, not only tensors and numbers: refused, because loading "
                         "it would run code stored in the file. Use a checkpoint written by hdmap_train.") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise HdmapError(f"Checkpoint {checkpoint} is truncated or corrupt ({first}): train the run again, or restore "
                         "the file.") from None
    model = build_model(OmegaConf.create(model_cfg))
    try:
        model.on_load_checkpoint(state)  # restores the pre- and post-processor as the run used them
        model.load_state_dict(state["state_dict"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else (lines or [type(exc).__name__])[0]
        raise HdmapError(f"Checkpoint {checkpoint} does not fit the run's model {model_cfg.get('name')} "
                         f"({detail[:200]}): it was written by another model or config.") from None
    return model.eval()
