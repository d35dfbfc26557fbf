"""A folder layout other than HDMAP's, for the data.layout seam: one flat folder of <domain>_<split>_<label>_<n>.tiff."""

from pathlib import Path

import pandas as pd

LABELS = {"good": 0, "fault": 1}


def flat_scan(root: Path, domain: str, split: str, subgroups: list[dict] | None = None) -> pd.DataFrame:
    """The samples of `split` ("train": good only; "test": good and fault) of `domain` (A or domain_A) in a flat folder."""
    del subgroups
    name = domain.removeprefix("domain_")
    labels = ["good"] if split == "train" else ["good", "fault"]
    rows = [{"image_path": str(path), "label_index": LABELS[label], "split": split, "domain": f"domain_{name}", "mask_path": ""}
            for label in labels for path in sorted(Path(root).glob(f"{name}_{split}_{label}_*.tiff"))]
    samples = pd.DataFrame(rows).sort_values("image_path", ignore_index=True)
    samples.attrs["task"] = "classification"
    return samples
