"""Image loading keeps amplitude; the datamodule splits, resizes, caches, validates and groups correctly;
bad data fails clearly; both real layouts (v1 PNG, float TIFF) train end to end."""

import shutil
from pathlib import Path

import joblib
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from conftest import TINY_MODEL, compose_cfg
from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule
from hdmap_train.data.images import read_image, resize
from hdmap_train.errors import HdmapError
from hdmap_train.train import dataset_root, run


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
    Image.fromarray(np.array([[0, 51, 255]], np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.array([[0, 1000, 65535]], np.uint16)).save(tmp_path / "b.png")
    tifffile.imwrite(tmp_path / "c.tiff", np.array([[0.5, 2.94]], np.float32))
    assert read_image(tmp_path / "a.png") == pytest.approx(np.array([[0, 0.2, 1.0]]))
    assert read_image(tmp_path / "b.png") == pytest.approx(np.array([[0, 1000 / 65535, 1.0]]))
    assert read_image(tmp_path / "c.tiff").tolist() == [[0.5, np.float32(2.94)]]  # above 1 is kept, exactly


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


def make_png_v1(root: Path, n_train: int = 20, n_test: int = 6, domains: str = "ABCD") -> Path:
    """The seed's v1 layout (`1000_8bit_resize_224x224`): 8-bit grey PNG, 224x224, per-image 0-255."""
    rng = np.random.default_rng(1)
    for domain in domains:
        for split, label, count in (("train", "good", n_train), ("test", "good", n_test), ("test", "fault", n_test)):
            folder = root / f"domain_{domain}" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 200, (224, 224), dtype=np.uint8)
                image[0, 0] = 255
                if label == "fault":
                    image[100:110] = 255
                Image.fromarray(image).save(folder / f"{i:06d}.png")
    return root


def test_resize_methods(tmp_path: Path) -> None:
    image = torch.rand(2, 1, 31, 95) + 1.0  # strictly positive, so zero padding shows
    assert resize(image, (31, 95)) is image  # native size: untouched, bit-exact
    for method in ("nearest", "bilinear", "aspect_pad", "pad"):
        assert resize(image, (224, 224), method).shape == (2, 1, 224, 224)
    rows = (resize(image, (224, 224), "aspect_pad")[0, 0] > 0).any(dim=1).nonzero()[:, 0]
    assert (rows.min().item(), rows.max().item()) == (75, 147)  # 73 rows, centred as in the v1 resize_pad PNGs
    padded = resize(image, (64, 128), "pad")
    assert torch.equal(padded[:, :, 16:47, 16:111], image) and padded[:, :, :16].abs().sum() == 0
    nearest = resize(image, (62, 190), "nearest")
    assert torch.equal(nearest[:, :, ::2, ::2], image)
    with pytest.raises(HdmapError, match="data.resize=cubic is unknown"):
        resize(image, (8, 8), "cubic")


def test_single_channel_and_png_v1_layout(tmp_path: Path) -> None:
    root = make_png_v1(tmp_path / "png", n_train=8, n_test=2, domains="AB")
    dm = datamodule(root, targets=["B"], image_size=(224, 224), channels=1)
    dm.setup()
    item = dm.test_data["domain_B"][0]
    assert item.image.shape == (1, 224, 224)
    png = np.asarray(Image.open(dm.test_data["domain_B"].samples.image_path[0]), dtype=np.float32) / 255
    assert torch.equal(item.image[0], torch.from_numpy(png))
    assert dm.summary()["native_sizes"] == [[224, 224]]
    batch = next(iter(dm.train_dataloader()))
    assert batch.image.shape == (6, 1, 224, 224) and batch.gt_label.tolist() == [False] * 6
    with pytest.raises(HdmapError, match="data.channels=2"):
        datamodule(root, channels=2)


def test_cache_tiers_give_identical_batches(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", domains="AB")
    batches = {}
    for limit in (100, 0.5, 0):  # everything resized; no 256x512 copy fits but all 31x95 natives do; nothing
        dm = datamodule(root, targets=["B"], image_size=(256, 512), cache_limit_mb=limit, resize="aspect_pad")
        dm.setup()
        modes = {dm.train_data.cache_mode, dm.val_data.cache_mode, *(d.cache_mode for d in dm.test_data.values())}
        batches[tuple(sorted(modes))] = dm.test_data["domain_B"].__getitems__([7, 1, 3])
    assert set(batches) == {("resized",), ("native",), ("stream",)}
    first, *others = batches.values()
    assert all(torch.equal(first.image, other.image) and first.image_path == other.image_path for other in others)


def _first_batches(root: Path, workers: int) -> list[torch.Tensor]:
    dm = datamodule(root, targets=["B"], num_workers=workers, eval_batch_size=3)
    dm.setup()
    return [batch.image.clone() for batch in dm.test_dataloaders()["domain_B"]]


@pytest.mark.slow
def test_worker_processes_inside_a_loky_sweep_worker(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", domains="AB")
    expected = _first_batches(root, 0)
    results = joblib.Parallel(n_jobs=2, backend="loky")(joblib.delayed(_first_batches)(root, 2) for _ in range(2))
    for batches in results:
        assert len(batches) == len(expected) and all(torch.equal(a, b) for a, b in zip(batches, expected, strict=True))


def test_subgroups_cold_warm_on_a_full_size_test_set(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", n_train=10, n_test=1000, domains="AB")
    dm = datamodule(root, targets=["B"], subgroups=[{"name": "cold", "index": [0, 500]}, {"name": "warm", "index": [500, None]}])
    dm.setup()
    samples = dm.test_data["domain_B"].samples
    assert len(samples) == 2000
    index = samples.image_path.str.extract(r"(\d{6})\.tiff$")[0].astype(int)
    assert ((index < 500) == (samples.subgroup == "cold")).all() and ((index >= 500) == (samples.subgroup == "warm")).all()
    assert dm.summary()["subgroups"]["domain_A"] == {"cold": {"good": 500, "fault": 500}, "warm": {"good": 500, "fault": 500}}
    assert "subgroup" not in dm.train_data.samples


def test_subgroup_fraction_pattern_and_errors(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", domains="AB", n_test=5)
    rules = [{"name": "early", "fraction": [0, 0.5]}, {"name": "four", "pattern": "4\\.tiff$"}]
    dm = datamodule(root, targets=["B"], subgroups=rules)
    dm.setup()
    good = dm.test_data["domain_A"].samples.query("label_index == 0")
    assert good.subgroup.tolist() == ["early", "early", "other", "other", "four"]  # floor(0.5 * 5) = 2
    for bad in ([{"name": "x"}], [{"name": "x", "index": [0, 1], "pattern": "a"}], [{"name": "x", "pattern": "("}]):
        with pytest.raises(HdmapError, match="data.subgroups"):
            datamodule(root, subgroups=bad)


def test_synthetic_data_config_marks_the_first_half_cold(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = compose_cfg(["data=synthetic", "data.synthetic.n_test=12", "data.synthetic.n_train=40", "domain.targets=[C]"], tmp_path)
    dm = MultiDomainHDMAPDataModule.from_config(cfg.data, root=tiny_dataset, source="A", targets=["C"], seed=0)
    dm.setup()
    samples = dm.test_data["domain_C"].samples
    index = samples.image_path.str.extract(r"(\d{6})\.tiff$")[0].astype(int)
    assert ((index < 6) == (samples.subgroup == "cold")).all() and set(samples.subgroup) == {"cold", "warm"}


def test_unknown_data_option_is_named(tmp_path: Path) -> None:
    cfg = compose_cfg(["+data.colour=red"], tmp_path)
    with pytest.raises(HdmapError, match="Unknown data option.*colour"):
        MultiDomainHDMAPDataModule.from_config(cfg.data, root=tmp_path, source="A", targets=["B"], seed=0)


def test_synthetic_fault_validation_is_deterministic_and_labelled(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", n_train=20, domains="AB")
    setups = []
    for _ in range(2):
        dm = datamodule(root, targets=["B"], image_size=(31, 95), validation="synthetic_faults", val_fraction=0.4)
        dm.setup()
        setups.append(dm)
    dm, again = setups
    val = dm.val_data
    labels = val.samples.label_index.to_numpy()
    assert len(labels) == 8 and labels.sum() == 4 and (labels == val.samples.injected_fault.to_numpy()).all()
    images = val.images(list(range(8)))
    assert torch.equal(images, again.val_data.images(list(range(8))))
    assert (again.val_data.samples.label_index.to_numpy() == labels).all()
    originals = torch.from_numpy(np.stack([read_image(Path(p)) for p in val.samples.image_path]))
    added = images[:, 0] - originals
    assert torch.equal(added[labels == 0], torch.zeros_like(added[labels == 0]))  # normal images untouched
    for diff in added[labels == 1]:
        rows = (diff > 0).any(dim=1)
        assert 1 <= int(rows.sum()) <= 6 and float(diff.max()) >= 0.5 * dm.statistics["domain_A"].maximum  # thin bright lines
    assert dm.summary()["validation"] == {"mode": "synthetic_faults", "normal": 4, "fault": 4, "faults": dm.validation_faults}
    assert dm.train_data.samples.label_index.eq(0).all() and "injected_fault" not in dm.train_data.samples
    with pytest.raises(HdmapError, match="data.validation=test"):
        datamodule(root, validation="test")


@pytest.mark.slow
def test_v1_png_layout_trains_end_to_end(tmp_path: Path) -> None:
    root = make_png_v1(tmp_path / "1000_8bit_resize_224x224")
    cfg = compose_cfg(
        ["model=draem", "trainer=cpu", "trainer.enable_progress_bar=false", "data=hdmap_png_v1", f"data.root={root}",
         *TINY_MODEL["draem"], "model.max_epochs=1", "domain.targets=[B]", "data.validation=synthetic_faults"],
        tmp_path / "run",
    )
    assert cfg.data.validation_faults.rows == [7, 14]
    record = run(cfg, tmp_path / "run")
    assert record["status"] == "success" and record["data"]["manifest"] is None
    assert record["data"]["native_sizes"] == [[224, 224]] and record["data"]["image_size"] == [32, 96]
    assert record["data"]["test_samples"] == {"domain_A": 12, "domain_B": 12}
    assert record["data"]["subgroups"]["domain_B"] == {"cold": {"good": 6, "fault": 6}}  # indices < 500
    assert record["data"]["validation"]["fault"] == 1
    assert dataset_root(cfg) == root
