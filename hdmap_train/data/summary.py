"""What a datamodule loaded and how, for metrics.json's `data` record (MultiDomainHDMAPDataModule.summary)."""

import hashlib
from pathlib import Path

import pandas as pd

from hdmap_train.data.layout import manifest_reference, subgroup_counts


def test_fingerprint(samples: pd.DataFrame, root: Path) -> str:
    """What a test set holds, whatever the layout: sha256 over its sorted (path relative to the root, label, sha256 of the
    file's bytes). Two runs pair on a domain only with equal fingerprints (hdmap_train.sweep.comparison).
    """
    entries = []
    for path, label in zip(samples["image_path"], samples["label_index"], strict=True):
        relative = Path(path).relative_to(root) if Path(path).is_relative_to(root) else Path(path).name
        entries.append(f"{relative}\t{int(label)}\t{hashlib.sha256(Path(path).read_bytes()).hexdigest()}")
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


def cache_modes(dm) -> dict:
    """Where each split's images are kept (resized, native, stream or device)."""
    return {"train": dm.train_data.cache_mode, "val": dm.val_data.cache_mode,
            "test": {d: ds.cache_mode for d, ds in dm.test_data.items()}}


def per_source(dm) -> dict:
    """Several sources: their names and each one's training and (stratified) validation counts; {} for one."""
    if len(dm.sources) == 1:
        return {}
    return {
        "sources": dm.sources,
        "validation_split": "stratified: data.val_fraction of each source domain's train/good, joined",
        **{f"{split}_samples_by_source": dataset.samples.domain.value_counts().reindex(dm.sources).astype(int).to_dict()
           for split, dataset in (("train", dm.train_data), ("val", dm.val_data))},
    }


def data_summary(dm) -> dict:
    """What was loaded and how, for metrics.json (data record)."""
    datasets = [dm.train_data, dm.val_data, *dm.test_data.values()]
    subgroups = {d: subgroup_counts(ds.samples) for d, ds in dm.test_data.items() if "subgroup" in ds.samples}
    manifest = manifest_reference(dm.root)
    return {
        "root": str(dm.root),
        "manifest": manifest,
        # without manifest.json nothing records which raw condition/sensor each domain_X holds
        "mapping_verified": manifest is not None,
        "train_samples": len(dm.train_data),
        "train_images_per_epoch": len(dm.train_data) - int(dm.drops_last_image()),
        "val_samples": len(dm.val_data),
        "test_samples": {d: len(ds) for d, ds in dm.test_data.items()},
        "test_fingerprints": {d: test_fingerprint(ds.samples, dm.root) for d, ds in dm.test_data.items()},
        "native_sizes": [list(shape) for shape in sorted({s for ds in datasets for s in ds.native_shapes})],
        "image_size": list(dm.image_size),
        "resize": dm.resize,
        "channels": dm.channels,
        "normalization": {
            "mode": dm.normalization["mode"],
            "stats": dm.normalization["stats"],
            "applied": {d: n.as_dict() for d, n in dm.normalizers.items()},
            "train_statistics": {d: s.as_dict() for d, s in dm.statistics.items()},
        },
        **per_source(dm),
        "validation": {
            "mode": dm.validation,
            "normal": int((dm.val_data.samples.label_index == 0).sum()),
            "fault": int((dm.val_data.samples.label_index == 1).sum()),
            **({"faults": dm.validation_faults} if dm.validation == "synthetic_faults" else {}),
        },
        "subgroups": subgroups,
        "subgroup_warnings": dm.subgroup_warnings,
        "cache": {"limit_mb": dm.cache_limit_mb, **cache_modes(dm),
                  **({"device": str(dm.cache_device)} if dm.cache_device else {})},
        "num_workers": dm.num_workers,
        "pin_memory": dm.pin_memory,
    }
