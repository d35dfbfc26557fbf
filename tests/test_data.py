"""Image loading keeps amplitude; the datamodule splits correctly; bad data fails clearly."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule
from hdmap_train.data.images import read_image
from hdmap_train.errors import HdmapError


def make_dataset(root: Path, n_train: int = 10, n_test: int = 4, domains: str = "ABCD") -> Path:
    """Minimal float TIFF dataset in the HDMAP layout."""
    rng = np.random.default_rng(0)
    for domain in domains:
        for split, label, count in (("train", "good", n_train), ("test", "good", n_test), ("test", "fault", n_test)):
            folder = root / f"domain_{domain}" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                tifffile.imwrite(folder / f"{i:06d}.tiff", rng.random((31, 95), dtype=np.float32))
    return root


def datamodule(root: Path, **kwargs) -> MultiDomainHDMAPDataModule:
    args = {"source": "A", "targets": ["B", "C", "D"], "image_size": (32, 96), "val_fraction": 0.2, "seed": 1}
    return MultiDomainHDMAPDataModule(root, **(args | kwargs))


def test_png_and_tiff_scaling(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 5), 255, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((4, 5), 65535, np.uint16)).save(tmp_path / "b.png")
    tifffile.imwrite(tmp_path / "c.tiff", np.full((4, 5), 2.94, np.float32))
    assert read_image(tmp_path / "a.png").max() == pytest.approx(1.0)
    assert read_image(tmp_path / "b.png").max() == pytest.approx(1.0)
    assert read_image(tmp_path / "c.tiff").max() == pytest.approx(2.94)  # above 1 is kept


def test_nan_and_corrupt_images_name_the_file(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "nan.tiff", np.full((4, 5), np.nan, np.float32))
    Image.fromarray(np.zeros((31, 95), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "ok.png").read_bytes()[:40])
    for name in ("nan.tiff", "truncated.png"):
        with pytest.raises(HdmapError, match=name):
            read_image(tmp_path / name)


def test_splits_are_seeded_disjoint_and_normal_only(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d")
    dm = datamodule(root)
    dm.setup()
    train, val = set(dm.train_data.samples.image_path), set(dm.val_data.samples.image_path)
    assert len(val) == 2 and len(train) == 8 and not train & val
    assert all("train/good" in p for p in train | val)
    assert list(dm.test_data) == ["domain_A", "domain_B", "domain_C", "domain_D"]
    assert all(len(ds) == 8 and ds.has_anomalous for ds in dm.test_data.values())
    again = datamodule(root)
    again.setup()
    assert set(again.val_data.samples.image_path) == val
    other = datamodule(root, seed=2)
    other.setup()
    assert set(other.val_data.samples.image_path) != val


def test_items_are_resized_three_channel_with_amplitude(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d")
    dm = datamodule(root)
    dm.setup()
    item = dm.test_data["domain_B"][5]
    assert item.image.shape == (3, 32, 96) and item.image.dtype == torch.float32
    assert torch.equal(item.image[0], item.image[2])
    labels = {("/fault/" in dm.test_data["domain_B"][i].image_path, int(dm.test_data["domain_B"][i].gt_label)) for i in range(8)}
    assert labels == {(True, 1), (False, 0)}
    batch = next(iter(dm.train_dataloader()))
    assert batch.image.shape[1:] == (3, 32, 96)


def test_narrowed_targets(tmp_path: Path) -> None:
    dm = datamodule(make_dataset(tmp_path / "d", domains="AC"), targets=["C"])
    dm.setup()
    assert dm.domains == ["domain_A", "domain_C"]


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("missing_root", "does not exist"),
        ("missing_domain", "domain_C is missing"),
        ("empty_split", "is empty"),
        ("corrupt_image", "Cannot read image"),
    ],
)
def test_bad_data_gives_clear_errors(tmp_path: Path, breakage: str, message: str) -> None:
    root = make_dataset(tmp_path / "d")
    if breakage == "missing_root":
        root = tmp_path / "nonexistent"
    elif breakage == "missing_domain":
        shutil.rmtree(root / "domain_C")
    elif breakage == "empty_split":
        for f in (root / "domain_B" / "test" / "fault").iterdir():
            f.unlink()
    else:
        (root / "domain_D" / "test" / "good" / "000001.tiff").write_bytes(b"not a tiff")
    with pytest.raises(HdmapError, match=message):
        datamodule(root).setup()


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_invalid_val_fraction(tmp_path: Path, fraction: float) -> None:
    with pytest.raises(HdmapError, match="val_fraction"):
        datamodule(tmp_path, val_fraction=fraction)


def test_source_in_targets_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(HdmapError, match="include the source"):
        datamodule(tmp_path, targets=["A", "B"])
