"""Normalisation modes: statistics from training images only, the right numbers applied to each domain."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule
from hdmap_train.data.normalization import Normalizer, PixelStats
from hdmap_train.errors import HdmapError
from helpers.config import checked_datamodule

OFFSETS = {"A": 0.0, "B": 10.0}  # domain B's images are 10 higher: source and per-domain statistics differ


def make_dataset(root: Path) -> Path:
    """Two domains; test images are far brighter than training ones, so using them would show."""
    rng = np.random.default_rng(0)
    for domain, offset in OFFSETS.items():
        for split, label, count, extra in (("train", "good", 10, 0.0), ("test", "good", 3, 100.0), ("test", "fault", 3, 200.0)):
            folder = root / f"domain_{domain}" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                image = (rng.random((31, 95)) + offset + extra).astype(np.float32)
                tifffile.imwrite(folder / f"{i:06d}.tiff", image)
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("norm") / "d")


def setup(root: Path, **normalization) -> MultiDomainHDMAPDataModule:
    dm = checked_datamodule(root, source="A", targets=["B"], image_size=(31, 95), val_fraction=0.3, seed=3, channels=1,
                            normalization=normalization, subgroups=[])
    dm.setup()
    return dm


def raw(paths) -> np.ndarray:
    return np.stack([tifffile.imread(p) for p in paths])


def test_pixel_stats_match_numpy() -> None:
    images = [np.random.default_rng(i).random((4, 7)) * (i + 1) for i in range(5)]
    stats = PixelStats.of(images)
    values = np.stack(images)
    assert stats.count == values.size
    assert stats.mean == pytest.approx(values.mean()) and stats.std == pytest.approx(values.std())
    assert (stats.minimum, stats.maximum) == (values.min(), values.max())


@pytest.mark.parametrize("mode", ["minmax", "zscore"])
def test_source_statistics_come_from_the_training_split_only(root: Path, mode: str) -> None:
    dm = setup(root, mode=mode)
    train = raw(dm.train_data.samples.image_path)
    assert len(train) == 7 and not set(dm.train_data.samples.image_path) & set(dm.val_data.samples.image_path)
    shift, scale = (train.min(), train.max() - train.min()) if mode == "minmax" else (train.mean(), train.std())
    stats = dm.summary()["normalization"]["train_statistics"]
    assert list(stats) == ["domain_A"] and stats["domain_A"]["pixels"] == train.size
    for domain in ("domain_A", "domain_B"):  # the targets get the source's numbers
        applied = dm.normalizers[domain]
        assert applied.shift == pytest.approx(shift, rel=1e-9) and applied.scale == pytest.approx(scale, rel=1e-6)
    test = dm.test_data["domain_B"]
    expected = (raw(test.samples.image_path[:2]) - shift) / scale
    np.testing.assert_allclose(test.images([0, 1])[:, 0].numpy(), expected, rtol=1e-5)
    assert test.images([0])[0].max() > 1.0, "never clipped"


def test_per_domain_statistics_use_each_domains_own_training_images(root: Path) -> None:
    dm = setup(root, mode="zscore", stats="per_domain")
    target_train = raw(sorted((root / "domain_B" / "train" / "good").iterdir()))
    assert dm.normalizers["domain_B"].shift == pytest.approx(target_train.mean())
    assert dm.normalizers["domain_B"].scale == pytest.approx(target_train.std(), rel=1e-6)
    assert dm.normalizers["domain_A"].shift == pytest.approx(raw(dm.train_data.samples.image_path).mean())
    assert set(dm.summary()["normalization"]["train_statistics"]) == {"domain_A", "domain_B"}


def test_fixed_bounds_and_per_image(root: Path) -> None:
    dm = setup(root, mode="minmax_fixed", bounds={"A": [0.0, 2.0], "B": [10.0, 14.0]})
    assert dm.normalizers["domain_B"] == Normalizer("minmax_fixed", 10.0, 4.0)
    image = dm.train_data.images([0])[0, 0].numpy()
    np.testing.assert_allclose(image, tifffile.imread(dm.train_data.samples.image_path[0]) / 2.0, rtol=1e-6)
    per_image = setup(root, mode="per_image").test_data["domain_B"].images([0, 1, 2])
    assert torch.allclose(per_image.amin(dim=(1, 2, 3)), torch.zeros(3)) and torch.allclose(per_image.amax(dim=(1, 2, 3)), torch.ones(3))
    assert torch.equal(Normalizer("per_image")(torch.full((1, 1, 2, 2), 5.0)), torch.zeros(1, 1, 2, 2))  # flat image


def test_none_is_bit_exact(root: Path) -> None:
    dm = setup(root)
    path = dm.test_data["domain_B"].samples.image_path[4]
    assert torch.equal(dm.test_data["domain_B"].images([4])[0, 0], torch.from_numpy(tifffile.imread(path)))


@pytest.mark.parametrize(
    ("normalization", "message"),
    [
        ({"mode": "robust"}, "mode=robust is unknown"),
        ({"mode": "zscore", "stats": "test"}, "stats=test is unknown"),
        ({"mode": "minmax_fixed", "bounds": {"A": [0, 1]}}, "no \\[min, max\\] for domain_B"),
        ({"mode": "minmax_fixed", "bounds": {"A": [1, 1], "B": [0, 1]}}, "max must be greater"),
    ],
)
def test_invalid_normalisation_settings(root: Path, normalization: dict, message: str) -> None:
    with pytest.raises(HdmapError, match=message):
        setup(root, **normalization)
