"""The HDMAP folder layout on disk, read into sample tables.

    <root>/domain_X/train/good/*.{png,tif,tiff}
    <root>/domain_X/test/{good,fault}/*.{png,tif,tiff}
    <root>/manifest.json          (optional; written by `python -m hdmap_train.prepare`)

`scan_domain` turns one split of one domain into a DataFrame with one row per image (sorted by path),
the form anomalib's datasets take. Test samples may carry a named subgroup (e.g. cold/warm) chosen by
`data.subgroups` rules; `manifest_reference` identifies the dataset for metrics.json. Nothing here
decodes an image. `split_sources` holds out validation images from each source domain separately.
"""

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from hdmap_train.data.images import IMAGE_EXTENSIONS
from hdmap_train.domains import domain_folder
from hdmap_train.errors import HdmapError

SPLITS = {"train": ("good",), "test": ("good", "fault")}
LABELS = {"good": 0, "fault": 1}
MANIFEST_KEYS = ("generator", "version", "mapping", "era", "seed", "counts", "normalization", "spec", "created")


def list_images(folder: Path) -> list[Path]:
    """Sorted image files (png/tif/tiff, any case) directly in `folder`; raises if none."""
    if not folder.is_dir():
        msg = f"Folder {folder} is missing. Expected the HDMAP layout <root>/domain_X/{{train/good,test/good,test/fault}}."
        raise HdmapError(msg)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        msg = f"Split {folder} is empty: no {'/'.join(IMAGE_EXTENSIONS)} images. Add images or point data.root elsewhere."
        raise HdmapError(msg)
    return files


def subgroup_names(files: list[Path], rules: list[dict]) -> list[str]:
    """Subgroup of each file of one test class (files in sorted order); the first matching rule wins.

    index: [start, stop) of the file's position in its class folder (stop null: to the end);
    fraction: the same with positions floor(from * n) .. floor(to * n); pattern: re.search on the
    file name. Files matching no rule are "other".
    """
    n = len(files)
    names = []
    for position, path in enumerate(files):
        name = "other"
        for rule in rules:
            if rule.get("pattern") is not None:
                hit = re.search(rule["pattern"], path.name) is not None
            else:
                start, stop = rule["index"] if rule.get("index") is not None else (
                    int(np.floor(rule["fraction"][0] * n)), int(np.floor(rule["fraction"][1] * n))
                )
                hit = start <= position < (n if stop is None else stop)
            if hit:
                name = rule["name"]
                break
        names.append(name)
    return names


# A folder layout: scan(root, domain, split, subgroups) -> samples, chosen by data.layout (null: scan_domain).
Scan = Callable[..., pd.DataFrame]


def scan_domain(root: Path, domain: str, split: str, subgroups: list[dict] | None = None) -> pd.DataFrame:
    """The HDMAP folder layout, <root>/domain_X/{train/good, test/good, test/fault}/*: one row per image of `split`
    ("train": normal training images; "test": good and fault) in `domain`: image_path, label_index (0 good, 1 fault),
    split, domain, mask_path (+ subgroup for test splits when subgroup rules are given). Another layout is a function
    of this signature returning the same columns (data.layout, README "Data").
    """
    folder = root / domain_folder(domain)
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        msg = f"Domain folder {folder} is missing (found: {', '.join(found) or 'nothing'}). Check data.root and domain=."
        raise HdmapError(msg)
    rows = []
    for label in SPLITS[split]:
        files = list_images(folder / split / label)
        groups = subgroup_names(files, subgroups) if subgroups and split == "test" else [None] * len(files)
        for path, group in zip(files, groups, strict=True):
            row = {"image_path": str(path), "label_index": LABELS[label], "split": split, "domain": domain_folder(domain), "mask_path": ""}
            if group is not None:
                row["subgroup"] = group
            rows.append(row)
    samples = pd.DataFrame(rows).sort_values("image_path", ignore_index=True)
    samples.attrs["task"] = "classification"
    return samples


def split_validation(
    train_all: pd.DataFrame, val_fraction: float, seed: int, min_train_images: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded (train, validation) split of one domain's train/good samples; validation rows get split "val".

    Raises when fewer than `min_train_images` would be left for training.
    """
    order = np.random.default_rng(seed).permutation(len(train_all))
    n_val = max(1, round(len(train_all) * val_fraction))
    if len(train_all) - n_val < min_train_images:
        msg = (
            f"{train_all.domain.iloc[0]} train/good has {len(train_all)} images; holding out {n_val} for validation "
            f"(data.val_fraction={val_fraction}) leaves {len(train_all) - n_val} for training, fewer than "
            f"data.min_train_images={min_train_images}. Lower data.val_fraction or add training images."
        )
        raise HdmapError(msg)
    val = train_all.iloc[np.sort(order[:n_val])].reset_index(drop=True).assign(split="val")
    train = train_all.iloc[np.sort(order[n_val:])].reset_index(drop=True)
    val.attrs = train.attrs = dict(train_all.attrs)
    return train, val


def split_sources(
    root: Path, sources: list[str], val_fraction: float, seed: int, min_train_images: int, scan: "Scan | None" = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation) of the source domains: each domain's train/good split on its own (split_validation,
    same seed), then joined in source order, so every source holds out its val_fraction and a domain's
    validation images are the same whichever other sources it is trained with. scan: the folder layout (scan_domain).
    """
    scan = scan or scan_domain
    parts = [split_validation(scan(root, source, "train"), val_fraction, seed, min_train_images) for source in sources]
    train, val = (pd.concat(frames, ignore_index=True) for frames in zip(*parts, strict=True))
    val.attrs = train.attrs = dict(parts[0][0].attrs)
    return train, val


def subgroup_coverage(samples: pd.DataFrame, rules: list[dict]) -> list[str]:
    """Warnings for subgroups that come out empty or cover a whole test class of one domain (e.g. a test set
    under 500 images per class leaves the default `warm` subgroup empty).
    """
    if not rules or "subgroup" not in samples:
        return []
    warnings = []
    for label, label_name in ((0, "good"), (1, "fault")):
        names = samples.loc[samples.label_index == label, "subgroup"]
        where = f"{samples.domain.iloc[0]} test/{label_name} ({len(names)} images)"
        for rule in rules:
            count = int((names == rule["name"]).sum())
            if count == 0:
                warnings.append(f"Subgroup '{rule['name']}' is empty in {where}; check data.subgroups.")
            elif count == len(names):
                warnings.append(f"Subgroup '{rule['name']}' covers the whole of {where}; check data.subgroups.")
    return warnings


def subgroup_counts(samples: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{subgroup: {"good": n, "fault": n}} of one test set, in order of first appearance."""
    return {
        str(name): {"good": int((group.label_index == 0).sum()), "fault": int((group.label_index == 1).sum())}
        for name, group in samples.groupby("subgroup", sort=False)
    }


def manifest_reference(root: Path) -> dict | None:
    """Path, sha256 and the identifying fields (mapping, seed, counts, ...) of <root>/manifest.json."""
    path = root / "manifest.json"
    if not path.is_file():
        return None
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise HdmapError(f"{path} is not valid JSON ({exc}); re-run `python -m hdmap_train.prepare` or remove it.") from exc
    return {"path": str(path), "sha256": hashlib.sha256(raw).hexdigest(), **{k: manifest[k] for k in MANIFEST_KEYS if k in manifest}}
