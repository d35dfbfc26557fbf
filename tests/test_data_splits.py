"""Splits that can train: every training image used, too few images stop, subgroups and the domain mapping flagged."""

import shutil
from pathlib import Path

import pytest

from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule
from hdmap_train.errors import HdmapError
from helpers.config import checked_datamodule


def datamodule(root: Path, **kwargs) -> MultiDomainHDMAPDataModule:
    args = {"source": "A", "targets": ["B"], "image_size": (32, 96), "val_fraction": 0.1} | kwargs
    dm = checked_datamodule(root, **args)
    dm.setup()
    return dm


def images_per_epoch(dm: MultiDomainHDMAPDataModule) -> int:
    return sum(len(batch.image) for batch in dm.train_dataloader())


@pytest.mark.parametrize(("batch_size", "drop_single", "expected"), [(8, True, 36), (5, True, 35), (5, False, 36), (64, True, 36)])
def test_every_training_image_is_used_but_a_single_leftover_for_batchnorm(
    batch_size: int, drop_single: bool, expected: int, tiny_dataset: Path,
) -> None:
    dm = datamodule(tiny_dataset, train_batch_size=batch_size, drop_single_leftover=drop_single)
    assert len(dm.train_data) == 36  # 40 minus 4 held out
    assert images_per_epoch(dm) == expected
    assert dm.summary()["train_images_per_epoch"] == expected


def test_too_few_training_images_stop_naming_counts_and_the_fix(tiny_dataset: Path) -> None:
    with pytest.raises(HdmapError, match=r"40 images; holding out 39 .*data.val_fraction=0.97.* leaves 1 .*min_train_images=5.*Lower data.val_fraction"):
        datamodule(tiny_dataset, val_fraction=0.97)
    assert len(datamodule(tiny_dataset, val_fraction=0.97, min_train_images=1).train_data) == 1  # configurable


def test_empty_or_whole_class_subgroups_are_flagged(tiny_dataset: Path, caplog) -> None:
    # The HDMAP default (cold = indices 0-499, warm = 500+) on 12 test images per class: warm is empty, cold is everything.
    dm = datamodule(tiny_dataset, subgroups=[{"name": "cold", "index": [0, 500]}, {"name": "warm", "index": [500, None]}])
    flagged = dm.summary()["subgroup_warnings"]
    assert len(flagged) == 8  # 2 domains x 2 classes x (warm empty + cold whole)
    assert "Subgroup 'warm' is empty in domain_A test/good (12 images)" in flagged[0] + flagged[1]
    assert any("'cold' covers the whole of domain_B test/fault" in w for w in flagged)
    assert "Subgroup 'warm' is empty" in caplog.text
    assert datamodule(tiny_dataset, subgroups=[{"name": "cold", "fraction": [0, 0.5]}]).summary()["subgroup_warnings"] == []


def test_dataset_without_manifest_is_recorded_as_unverified(tiny_dataset: Path, tmp_path: Path, caplog) -> None:
    assert datamodule(tiny_dataset).summary()["mapping_verified"] is True
    copy = shutil.copytree(tiny_dataset, tmp_path / "no_manifest", ignore=shutil.ignore_patterns("manifest.json"))
    summary = datamodule(copy).summary()
    assert summary["mapping_verified"] is False and summary["manifest"] is None
    assert "has no manifest.json: the domain mapping" in caplog.text and "unverified" in caplog.text
