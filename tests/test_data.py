"""Image loading keeps amplitude; the datamodule splits, resizes, caches, validates and groups correctly;
bad data fails clearly; both real layouts (v1 PNG, float TIFF) train end to end."""

import logging
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from hdmap_train.checks import check_config
from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule, build_datamodule
from hdmap_train.data.images import read_image, read_image_with_kind, resize, warn_mixed_kinds
from hdmap_train.errors import HdmapError
from hdmap_train.train import run
from helpers.config import checked_datamodule, compose_cfg


def layout_files(root: Path, n_train: int, n_test: int, domains: str) -> Iterator[tuple[str, Path]]:
    """(label, file path without suffix) of every image of the HDMAP layout, domain by domain; folders created."""
    for domain in domains:
        for split, label, count in (("train", "good", n_train), ("test", "good", n_test), ("test", "fault", n_test)):
            folder = root / f"domain_{domain}" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                yield label, folder / f"{i:06d}"


def make_dataset(root: Path, n_train: int = 10, n_test: int = 4, domains: str = "ABCD") -> Path:
    """Minimal float TIFF dataset in the HDMAP layout."""
    rng = np.random.default_rng(0)
    for _, path in layout_files(root, n_train, n_test, domains):
        tifffile.imwrite(path.with_suffix(".tiff"), rng.random((31, 95), dtype=np.float32))
    return root


def datamodule(root: Path, **kwargs) -> MultiDomainHDMAPDataModule:
    args = {"source": "A", "targets": ["B", "C", "D"], "image_size": (32, 96), "val_fraction": 0.2, "seed": 1}
    return checked_datamodule(root, **(args | kwargs))


def test_png_and_tiff_scaling(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 51, 255], [0, 51, 255]], np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.array([[0, 1000, 65535], [0, 1000, 65535]], np.uint16)).save(tmp_path / "b.png")
    tifffile.imwrite(tmp_path / "c.tiff", np.array([[0.5, 2.94], [0.5, 2.94]], np.float32))
    assert read_image(tmp_path / "a.png") == pytest.approx(np.array([[0, 0.2, 1.0]] * 2))
    assert read_image(tmp_path / "b.png") == pytest.approx(np.array([[0, 1000 / 65535, 1.0]] * 2))
    assert read_image(tmp_path / "c.tiff").tolist() == [[0.5, np.float32(2.94)]] * 2  # above 1 is kept, exactly


GREY = np.random.default_rng(3).random((31, 95))  # an HDMAP-sized image in [0, 1)
RGB = np.random.default_rng(4).random((31, 95, 3))
LUMA = RGB @ [0.299, 0.587, 0.114]


def _palette_png(path: Path) -> None:
    """8-bit palette PNG whose index i stands for grey 255 - i (indices are not values)."""
    image = Image.fromarray((GREY * 255).astype(np.uint8), mode="P")
    image.putpalette([v for i in range(256) for v in (255 - i,) * 3])
    image.save(path)


# name, writer(path), expected (H, W) image, kind
SHAPES_AND_TYPES = [
    ("hw.tiff", lambda p: tifffile.imwrite(p, GREY.astype(np.float32)), GREY.astype(np.float32), "float"),
    ("hw1.tiff", lambda p: tifffile.imwrite(p, GREY[:, :, None]), GREY.astype(np.float32), "float"),  # Xdata[:, :, :, i]
    ("1hw.tiff", lambda p: tifffile.imwrite(p, GREY[None].astype(np.float32)), GREY.astype(np.float32), "float"),
    ("f16.tiff", lambda p: tifffile.imwrite(p, GREY.astype(np.float16)), GREY.astype(np.float16).astype(np.float32), "float"),
    ("u8.tiff", lambda p: tifffile.imwrite(p, (GREY * 255).astype(np.uint8)), (GREY * 255).astype(np.uint8) / np.float32(255), "8-bit"),
    ("u16.tiff", lambda p: tifffile.imwrite(p, (GREY * 65535).astype(np.uint16)), (GREY * 65535).astype(np.uint16) / np.float32(65535), "16-bit"),
    ("bool.tiff", lambda p: tifffile.imwrite(p, GREY > 0.5), (GREY > 0.5).astype(np.float32), "bool"),
    ("u16.png", lambda p: Image.fromarray((GREY * 65535).astype(np.uint16)).save(p), (GREY * 65535).astype(np.uint16) / np.float32(65535), "16-bit"),
    ("bool.png", lambda p: Image.fromarray(GREY > 0.5).save(p), (GREY > 0.5).astype(np.float32), "bool"),
    ("grey_rgb.png", lambda p: Image.fromarray(np.repeat((GREY * 255).astype(np.uint8)[:, :, None], 3, 2)).save(p),
     (GREY * 255).astype(np.uint8) / np.float32(255), "8-bit"),  # identical channels: grey, exactly
    ("la.png", lambda p: Image.fromarray(np.stack([(GREY * 255).astype(np.uint8), np.zeros((31, 95), np.uint8)], 2)).save(p),
     (GREY * 255).astype(np.uint8) / np.float32(255), "8-bit"),  # alpha dropped
    ("palette.png", _palette_png, (255 - (GREY * 255).astype(np.uint8)) / np.float32(255), "8-bit"),
    ("rgb.png", lambda p: Image.fromarray((RGB * 255).astype(np.uint8)).save(p),
     (RGB * 255).astype(np.uint8) / np.float32(255) @ [0.299, 0.587, 0.114], "8-bit colour->grey (luminance)"),
    ("rgba.png", lambda p: Image.fromarray(np.dstack([(RGB * 255).astype(np.uint8), np.zeros((31, 95), np.uint8)])).save(p),
     (RGB * 255).astype(np.uint8) / np.float32(255) @ [0.299, 0.587, 0.114], "8-bit colour->grey (luminance)"),
    ("rgb.tiff", lambda p: tifffile.imwrite(p, RGB.astype(np.float32), photometric="rgb"), LUMA, "float colour->grey (luminance)"),
    ("planar_rgb.tiff", lambda p: tifffile.imwrite(p, np.moveaxis(RGB, -1, 0).astype(np.float32), photometric="rgb", planarconfig="separate"),
     LUMA, "float colour->grey (luminance)"),
]


@pytest.mark.parametrize(("name", "write", "expected", "kind"), SHAPES_AND_TYPES, ids=[case[0] for case in SHAPES_AND_TYPES])
def test_every_image_shape_and_type_loads_as_hw(tmp_path: Path, name: str, write, expected: np.ndarray, kind: str) -> None:
    write(tmp_path / name)
    image, found = read_image_with_kind(tmp_path / name)
    assert image.shape == (31, 95) and image.dtype == np.float32 and found == kind
    np.testing.assert_allclose(image, expected, rtol=1e-6, atol=1e-7)


def _rgb16_png(path: Path) -> None:
    """A 16-bit RGB PNG (Pillow can read but not write one)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + (RGB[y] * 65535).astype(">u2").tobytes() for y in range(31))
    header = struct.pack(">IIBBBBB", 95, 31, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


# name, writer(path), what the one-line error must say (after the file name)
UNLOADABLE = [
    ("column.tiff", lambda p: tifffile.imwrite(p, np.zeros((95, 1), np.float32)), r"shape \(95, 1\): 95x1 pixels, a 1-pixel strip"),
    ("row1.tiff", lambda p: tifffile.imwrite(p, np.zeros((1, 95, 1), np.float32)), r"shape \(1, 95, 1\): 1x95 pixels, a 1-pixel strip"),
    ("row.png", lambda p: Image.fromarray(np.zeros((1, 95), np.uint8)).save(p), r"shape \(1, 95\): 1x95 pixels"),
    ("stack.tiff", lambda p: tifffile.imwrite(p, np.zeros((5, 31, 95), np.float32)), r"shape \(5, 31, 95\): a stack or volume"),
    ("pages3.tiff", lambda p: tifffile.imwrite(p, np.zeros((3, 31, 95), np.float32), photometric="minisblack"),
     r"shape \(3, 31, 95\): a stack or volume"),  # 3 grey pages are not colour
    ("volume.tiff", lambda p: tifffile.imwrite(p, np.zeros((2, 2, 31, 95), np.float32), photometric="minisblack"),
     r"shape \(2, 2, 31, 95\): a stack or volume"),
    ("rgb_stack.tiff", lambda p: tifffile.imwrite(p, np.zeros((2, 31, 95, 3), np.uint8), photometric="rgb"),
     r"shape \(2, 31, 95, 3\): a stack of colour images"),
    ("ambiguous.tiff", lambda p: tifffile.imwrite(p, np.zeros((3, 31, 3), np.uint8), photometric="rgb"), r"shape \(3, 31, 3\): ambiguous"),
    ("two_channel.tiff", lambda p: tifffile.imwrite(p, np.zeros((31, 95, 2), np.float32), photometric="minisblack"),
     r"shape \(31, 95, 2\): a stack or volume"),
    ("int16.tiff", lambda p: tifffile.imwrite(p, np.ones((31, 95), np.int16)), "unsupported pixel type int16"),
    ("u32.tiff", lambda p: tifffile.imwrite(p, np.ones((31, 95), np.uint32)), "unsupported pixel type uint32"),
    ("inverted.tiff", lambda p: tifffile.imwrite(p, np.ones((31, 95), np.uint8), photometric="miniswhite"), "is a MINISWHITE TIFF"),
    ("palette.tiff", lambda p: tifffile.imwrite(p, np.ones((31, 95), np.uint8), photometric="palette", colormap=np.zeros((3, 256), np.uint16)),
     "is a PALETTE TIFF"),
    ("rgb16.png", _rgb16_png, "is a 16-bit RGB PNG, which Pillow reads as 8-bit"),
]


@pytest.mark.parametrize(("name", "write", "message"), UNLOADABLE, ids=[case[0] for case in UNLOADABLE])
def test_unloadable_images_stop_naming_file_and_problem(tmp_path: Path, name: str, write, message: str) -> None:
    write(tmp_path / name)
    with pytest.raises(HdmapError, match=rf"Image {tmp_path / name} (has |is )?.*{message}") as error:
        read_image(tmp_path / name)
    assert "\n" not in str(error.value)


def test_warn_mixed_kinds_names_counts_examples_and_rule(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hdmap_train.data.images"):
        warn_mixed_kinds({f"/d/{i}.tiff": "float" for i in range(5)}, "domain_A train")  # one kind: silent
        assert not caplog.records
        warn_mixed_kinds({**{f"/d/{i}.tiff": "float" for i in range(5)}, "/d/x.png": "8-bit", "/d/y.png": "8-bit"}, "domain_A train")
    (record,) = caplog.records
    assert record.getMessage().startswith("domain_A train mixes image kinds")
    assert "float: 5 (e.g. /d/0.tiff, /d/1.tiff, /d/2.tiff)" in record.getMessage() and "8-bit: 2 (e.g. /d/x.png, /d/y.png)" in record.getMessage()
    assert "8-bit /255" in record.getMessage() and "float as stored" in record.getMessage()


def test_colour_png_among_greys_warns_for_its_split_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_png_v1(tmp_path / "png", n_train=14, n_test=2, domains="AB")
    colour = root / "domain_B" / "test" / "fault" / "000001.png"
    rgb = (np.random.default_rng(5).random((224, 224, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(colour)
    with caplog.at_level(logging.WARNING, logger="hdmap_train.data.images"):
        dm = datamodule(root, targets=["B"], image_size=(224, 224), channels=1)
        dm.setup()
    (record,) = [r for r in caplog.records if r.name == "hdmap_train.data.images"]
    message = record.getMessage()
    assert message.startswith("domain_B test mixes image kinds or converts colour")
    assert f"8-bit colour->grey (luminance): 1 (e.g. {colour})" in message and "8-bit: 3 (" in message
    assert "0.299 R + 0.587 G + 0.114 B" in message
    index = dm.test_data["domain_B"].samples.image_path.tolist().index(str(colour))
    expected = torch.from_numpy((rgb / np.float32(255)) @ np.array([0.299, 0.587, 0.114], np.float32))
    torch.testing.assert_close(dm.test_data["domain_B"][index].image[0], expected)  # luminance, not channel 0


def test_8bit_png_among_float_tiffs_warns_for_the_training_split(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_dataset(tmp_path / "d", n_train=15, domains="AB")
    png = root / "domain_A" / "train" / "good" / "000100.png"
    Image.fromarray((GREY * 255).astype(np.uint8)).save(png)
    with caplog.at_level(logging.WARNING, logger="hdmap_train.data.images"):
        datamodule(root, targets=["B"]).setup()
    (record,) = [r for r in caplog.records if r.name == "hdmap_train.data.images"]  # train + val together; test splits are clean
    message = record.getMessage()
    assert message.startswith("domain_A train mixes image kinds") and "float: 15 (" in message
    assert f"8-bit: 1 (e.g. {png})" in message


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


def test_items_are_resized_single_channel_and_batches_get_three_channels_after_the_transfer(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d")
    dm = datamodule(root)
    dm.setup()
    item = dm.test_data["domain_B"][5]
    assert item.image.shape == (1, 32, 96) and item.image.dtype == torch.float32
    labels = {("/fault/" in dm.test_data["domain_B"][i].image_path, int(dm.test_data["domain_B"][i].gt_label)) for i in range(8)}
    assert labels == {(True, 1), (False, 0)}
    batch = next(iter(dm.train_dataloader()))
    assert batch.image.shape[1:] == (1, 32, 96)
    model_batch = dm.on_after_batch_transfer(batch, 0)
    assert model_batch.image.shape[1:] == (3, 32, 96) and all(torch.equal(model_batch.image[:, c], batch.image[:, 0]) for c in range(3))
    assert model_batch.gt_label is batch.gt_label and model_batch.image_path == batch.image_path


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
    for label, path in layout_files(root, n_train, n_test, domains):
        image = rng.integers(0, 200, (224, 224), dtype=np.uint8)
        image[0, 0] = 255
        if label == "fault":
            image[100:110] = 255
        Image.fromarray(image).save(path.with_suffix(".png"))
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
    dm = build_datamodule(cfg.data, cfg.domain, seed=0)  # generates the tiny_dataset spec into paths.cache_dir
    dm.setup()
    samples = dm.test_data["domain_C"].samples
    index = samples.image_path.str.extract(r"(\d{6})\.tiff$")[0].astype(int)
    assert ((index < 6) == (samples.subgroup == "cold")).all() and set(samples.subgroup) == {"cold", "warm"}


def test_unknown_data_option_is_named(tmp_path: Path) -> None:
    cfg = compose_cfg(["+data.colour=red"], tmp_path)
    with pytest.raises(HdmapError, match="Unknown data option.*colour"):
        build_datamodule(cfg.data, cfg.domain, seed=0)


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
         "size=tiny", "model.max_epochs=1", "domain.targets=[B]", "data.validation=synthetic_faults"],
        tmp_path / "run",
    )
    assert cfg.data.validation_faults.rows == [7, 14]
    record = run(cfg, tmp_path / "run")
    assert record["status"] == "success" and record["data"]["manifest"] is None
    assert record["data"]["native_sizes"] == [[224, 224]] and record["data"]["image_size"] == [32, 96]
    assert record["data"]["test_samples"] == {"domain_A": 12, "domain_B": 12}
    assert record["data"]["subgroups"]["domain_B"] == {"cold": {"good": 6, "fault": 6}}  # indices < 500
    assert record["data"]["validation"]["fault"] == 1
    assert record["data"]["root"] == str(root)


def test_another_folder_layout_is_chosen_in_the_data_config(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    rng = np.random.default_rng(0)
    for domain in "AB":
        for split, label, count in (("train", "good", 12), ("test", "good", 3), ("test", "fault", 3)):
            for n in range(count):
                tifffile.imwrite(flat / f"{domain}_{split}_{label}_{n:03d}.tiff", rng.random((31, 95), dtype=np.float32))
    cfg = compose_cfg([f"data.root={flat}", "domain=A", "domain.targets=[B]", "data.val_fraction=0.25",
                       "data.layout={_target_:helpers.layouts.flat_scan,_partial_:true}", "data.subgroups=[]"], tmp_path)
    check_config(cfg)
    dm = build_datamodule(cfg.data, cfg.domain, seed=0)
    dm.setup()
    assert (len(dm.train_data), len(dm.val_data)) == (9, 3)
    assert {domain: len(dataset) for domain, dataset in dm.test_data.items()} == {"domain_A": 6, "domain_B": 6}
    assert dm.test_data["domain_B"].samples.label_index.tolist() == [1, 1, 1, 0, 0, 0]  # fault files sort first
    batch = dm.on_after_batch_transfer(next(iter(dm.test_dataloaders()["domain_B"])), 0)
    assert batch.image.shape[1:] == (3, *cfg.data.image_size)
