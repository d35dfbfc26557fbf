"""Raw KRISS .mat files -> prepare -> TIFF dataset -> tensors, bit-exact; manifest; refusals; training records it."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule
from hdmap_train.data.images import read_image
from hdmap_train.errors import HdmapError
from hdmap_train.prepare import prepare
from hdmap_train.raw_mat import MatSamples
from hdmap_train.train import run
from helpers.config import CONF_DIR, compose_cfg

HEAD = {"A": (1, 3), "B": (1, 1), "C": (3, 3), "D": (3, 1)}  # domain -> (condition class, sensor)
N_TRAIN_FILE, N_TEST_FILE = 30, 12


def write_mat(path: Path, xdata: np.ndarray, fmt: str, key: str = "Xdata") -> None:
    """A MATLAB file holding xdata (H x W x 1 x N): v5 through scipy, v7.3 as MATLAB writes it (HDF5, transposed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "v5":
        scipy.io.savemat(path, {key: xdata})
        return
    with h5py.File(path, "w", userblock_size=512) as handle:
        handle.create_dataset(key, data=np.ascontiguousarray(xdata.T)).attrs["MATLAB_class"] = np.bytes_("double")
    with path.open("r+b") as handle:
        handle.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .".ljust(116))


def make_raw(root: Path, fmt: str = "v5", scale: float = 1.5) -> dict[tuple[int, int, str], np.ndarray]:
    """The KRISS raw tree for the four HEAD domains; returns {(condition, sensor, file kind): Xdata}."""
    rng = np.random.default_rng(7)
    arrays = {}
    for condition, sensor in HEAD.values():
        for kind, folder, n in (
            ("train", f"Normal/Normal2_LSSm0.3_HSS0/Class{condition}/1/HDMap_train_test/{sensor}_TSA_DIF_train.mat", N_TRAIN_FILE),
            ("good", f"Normal/Normal2_LSSm0.3_HSS0/Class{condition}/1/HDMap_train_test/{sensor}_TSA_DIF_test.mat", N_TEST_FILE),
            ("fault", f"Planet_fault_ring/1.42_LSSm0.3_HSS0/Class{condition}/1/HDMap_train_test/{sensor}_TSA_DIF_test.mat", N_TEST_FILE),
        ):
            xdata = rng.random((31, 95, 1, n)) * scale * condition  # float64, values above 1 included
            write_mat(root / folder, xdata, fmt)
            arrays[condition, sensor, kind] = xdata
    return arrays


def prepare_cfg(raw: Path, out: Path, *overrides: str) -> DictConfig:
    """Compose conf/prepare.yaml as `python -m hdmap_train.prepare` would."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="prepare",
            overrides=[f"prepare.raw_root={raw}", f"prepare.output_root={out}", "prepare.n_train=20", *overrides],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.runtime.cwd = str(out)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A prepared v5 dataset (original values) and the raw arrays it came from."""
    base = tmp_path_factory.mktemp("prep")
    arrays = make_raw(base / "raw")
    return prepare(prepare_cfg(base / "raw", base / "HDMAP").prepare), arrays


@pytest.mark.parametrize("fmt", ["v5", "v73"])
def test_round_trip_is_bit_exact_in_float32(fmt: str, tmp_path: Path) -> None:
    arrays = make_raw(tmp_path / "raw", fmt)
    out = prepare(prepare_cfg(tmp_path / "raw", tmp_path / "HDMAP").prepare)
    assert out == tmp_path / "HDMAP" / "20_tiff_original"
    chosen = np.random.RandomState(42).choice(N_TRAIN_FILE, 20, replace=False)  # the seed's HEAD selection
    for domain, (condition, sensor) in HEAD.items():
        train = sorted((out / f"domain_{domain}" / "train" / "good").iterdir())
        assert [p.name for p in train] == [f"{k:06d}.tiff" for k in range(20)]
        for k, path in enumerate(train):
            assert np.array_equal(read_image(path), arrays[condition, sensor, "train"][:, :, 0, chosen[k]].astype(np.float32))
        for kind, label in (("good", "good"), ("fault", "fault")):
            files = sorted((out / f"domain_{domain}" / "test" / label).iterdir())
            assert len(files) == N_TEST_FILE  # n_test null (the default): every sample of the file
            assert np.array_equal(read_image(files[5]), arrays[condition, sensor, kind][:, :, 0, 5].astype(np.float32))
    # ... and through the datamodule at native size, single channel, no normalisation: the same bits.
    dm = MultiDomainHDMAPDataModule(out, "C", ["A"], (31, 95), channels=1, val_fraction=0.25, subgroups=[])
    dm.setup()
    batch = dm.test_data["domain_A"].__getitems__([0, 13])
    expected = [arrays[1, 3, "fault"][:, :, 0, 0], arrays[1, 3, "good"][:, :, 0, 1]]  # sorted paths: fault/, then good/
    assert batch.image.shape == (2, 1, 31, 95)
    assert torch.equal(batch.image[:, 0], torch.from_numpy(np.stack(expected).astype(np.float32)))
    assert dm.test_data["domain_A"].cache_mode == "resized"


def test_manifest_records_mapping_sources_and_statistics(prepared: tuple[Path, dict]) -> None:
    out, arrays = prepared
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generator"] == "hdmap_train.prepare" and manifest["seed"] == 42 and manifest["era"] == "head"
    assert manifest["mapping"] == {d: {"condition": c, "sensor": s} for d, (c, s) in HEAD.items()}
    assert manifest["normalization"]["mode"] == "original"
    assert manifest["counts"]["B"] == {"train/good": 20, "test/good": N_TEST_FILE, "test/fault": N_TEST_FILE}
    entry = manifest["domains"]["B"]
    train_source = entry["sources"]["train/good"]
    assert train_source["path"].endswith("Class1/1/HDMap_train_test/1_TSA_DIF_train.mat")
    assert entry["sources"]["test/fault"]["path"].endswith("Planet_fault_ring/1.42_LSSm0.3_HSS0/Class1/1/HDMap_train_test/1_TSA_DIF_test.mat")
    assert train_source["samples_in_file"] == N_TRAIN_FILE and len(train_source["sha256"]) == 64
    assert train_source["indices"] == np.random.RandomState(42).choice(N_TRAIN_FILE, 20, replace=False).tolist()
    stats = entry["train_file_statistics"]
    assert stats["max"] == pytest.approx(arrays[1, 1, "train"].max())
    assert stats["std"] == pytest.approx(arrays[1, 1, "train"].std())


@pytest.mark.parametrize("mode", ["minmax", "zscore"])
def test_preparation_normalisation_uses_training_file_only(mode: str, tmp_path: Path) -> None:
    arrays = make_raw(tmp_path / "raw")
    out = prepare(prepare_cfg(tmp_path / "raw", tmp_path / "HDMAP", f"prepare.normalization={mode}", "prepare.domains=[C]").prepare)
    assert out.name == f"20_tiff_{mode}" and [p.name for p in out.iterdir() if p.is_dir()] == ["domain_C"]
    train = arrays[3, 3, "train"]
    shift, scale = (0.0, 0.087341) if mode == "minmax" else (train.mean(), train.std())  # HEAD bounds of C / train file
    fault = read_image(out / "domain_C" / "test" / "fault" / "000003.tiff")
    expected = ((arrays[3, 3, "fault"][:, :, 0, 3] - shift) / scale).astype(np.float32)
    np.testing.assert_allclose(fault, expected, rtol=1e-6)
    assert fault.max() > 1.0, "not clipped"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["domains"]["C"]["normalization"]["shift"] == pytest.approx(shift)


def test_existing_dataset_is_kept_unless_overwrite(prepared: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = prepared
    cfg = prepare_cfg(Path(json.loads((out / "manifest.json").read_text())["raw_root"]), out.parent)
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(HdmapError, match="already exists.*prepare.overwrite=true"):
        prepare(cfg.prepare)
    assert (out / "manifest.json").read_bytes() == before
    cfg.prepare.overwrite = True
    assert prepare(cfg.prepare) == out
    assert json.loads((out / "manifest.json").read_text())["counts"] == json.loads(before)["counts"]
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name], "no temporary or old folder left"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o755), (0o027, 0o750)])
def test_dataset_folder_has_a_normal_folders_mode(umask: int, mode: int, tmp_path: Path) -> None:
    make_raw(tmp_path / "raw")
    old = os.umask(umask)
    try:
        out = prepare(prepare_cfg(tmp_path / "raw", tmp_path / "HDMAP", "prepare.domains=[A]").prepare)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == mode  # as mkdir makes it, not mkdtemp's 0700
    assert stat.S_IMODE((out / "domain_A" / "train" / "good").stat().st_mode) == mode


@pytest.mark.parametrize(("key", "split", "available"), [("n_train", "train/good", N_TRAIN_FILE), ("n_test", "test/good", N_TEST_FILE)])
def test_fewer_samples_than_asked_stop_with_the_counts(key: str, split: str, available: int, tmp_path: Path) -> None:
    make_raw(tmp_path / "raw")
    cfg = prepare_cfg(tmp_path / "raw", tmp_path / "HDMAP", "prepare.domains=[A]").prepare
    cfg[key] = available + 10
    message = (
        rf"^Domain A {split}: \S+_TSA_DIF_\w+\.mat holds {available} samples, fewer than prepare\.{key}={available + 10}\. "
        rf"Ask for at most {available}, or pass prepare\.allow_fewer=true to write the {available} there are\.$"
    )
    with pytest.raises(HdmapError, match=message):
        prepare(cfg)
    assert not (tmp_path / "HDMAP").exists(), "nothing written"


def test_allow_fewer_writes_what_there_is_and_names_it_so(tmp_path: Path) -> None:
    make_raw(tmp_path / "raw")
    overrides = ("prepare.domains=[A,B]", "prepare.allow_fewer=true", f"prepare.n_test={N_TEST_FILE + 5}")
    cfg = prepare_cfg(tmp_path / "raw", tmp_path / "HDMAP", *overrides).prepare
    cfg.n_train = N_TRAIN_FILE + 10
    out = prepare(cfg)
    assert out == tmp_path / "HDMAP" / f"{N_TRAIN_FILE}_tiff_original"  # the number written, not the 40 asked
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["B"] == {"train/good": N_TRAIN_FILE, "test/good": N_TEST_FILE, "test/fault": N_TEST_FILE}
    assert len(list((out / "domain_B" / "train" / "good").iterdir())) == N_TRAIN_FILE
    assert manifest["selection"] | {"train": None, "test": None} == {
        "train": None, "test": None, "n_train": N_TRAIN_FILE + 10, "n_test": N_TEST_FILE + 5, "allow_fewer": True,
    }
    cfg.name = "mine"
    assert prepare(cfg) == tmp_path / "HDMAP" / "mine"  # a name of one's own is kept


@pytest.mark.parametrize("fmt", ["v5", "v73"])
def test_mat_without_xdata_names_the_file(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / "x.mat"
    write_mat(path, np.zeros((31, 95, 1, 2)), fmt, key="Ydata")
    with pytest.raises(HdmapError, match=r"x\.mat has no variable 'Xdata' \(found: Ydata\)"):
        MatSamples(path)
    (tmp_path / "junk.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 20)
    with pytest.raises(HdmapError, match=r"junk\.mat"):
        MatSamples(tmp_path / "junk.mat")


def test_nan_in_raw_file_and_missing_files_are_named(tmp_path: Path) -> None:
    xdata = np.ones((31, 95, 1, 4))
    xdata[3, 4, 0, 2] = np.nan
    write_mat(tmp_path / "nan.mat", xdata, "v5")
    with pytest.raises(HdmapError, match=r"nan\.mat: sample 2 of Xdata contains NaN"):
        MatSamples(tmp_path / "nan.mat").read(np.arange(4))
    with pytest.raises(HdmapError, match=r"Raw files missing.*Class1/1/HDMap_train_test/3_TSA_DIF_train\.mat"):
        prepare(prepare_cfg(tmp_path / "empty", tmp_path / "out").prepare)
    assert not (tmp_path / "out").exists()


def test_mapping_eras_compose(tmp_path: Path) -> None:
    v1 = prepare_cfg(tmp_path, tmp_path, "prepare/mapping=v1").prepare.mapping
    assert v1.name == "v1" and (v1.domains.A.condition, v1.domains.A.sensor) == (1, 1)
    assert (v1.domains.D.condition, v1.domains.D.sensor) == (3, 3)
    head = prepare_cfg(tmp_path, tmp_path).prepare.mapping
    assert {d: (e.condition, e.sensor) for d, e in head.domains.items()} == HEAD


def test_command_line(tmp_path: Path) -> None:
    make_raw(tmp_path / "raw")
    args = [sys.executable, "-m", "hdmap_train.prepare", f"prepare.raw_root={tmp_path / 'raw'}",
            f"prepare.output_root={tmp_path / 'HDMAP'}", "prepare.n_train=5", "prepare.n_test=3", "prepare.domains=[A]"]
    first = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert first.returncode == 0, first.stderr
    assert len(list((tmp_path / "HDMAP" / "5_tiff_original" / "domain_A" / "test" / "fault").iterdir())) == 3
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 1
    assert "prepare.overwrite=true" in again.stdout + again.stderr and "Traceback" not in again.stderr


@pytest.mark.slow
def test_prepared_tiff_dataset_trains_and_records_the_manifest(prepared: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = prepared
    cfg = compose_cfg(
        ["model=draem", "trainer=cpu", "trainer.enable_progress_bar=false", f"data.root={out}", "size=tiny",
         "model.max_epochs=1", "domain.targets=[B]", "data.normalization.mode=minmax_fixed"],
        tmp_path,
    )
    record = run(cfg, tmp_path)
    assert record["status"] == "success"
    manifest = record["data"]["manifest"]
    assert manifest["path"] == str(out / "manifest.json") and len(manifest["sha256"]) == 64
    assert manifest["mapping"]["A"] == {"condition": 1, "sensor": 3} and manifest["seed"] == 42
    assert record["data"]["native_sizes"] == [[31, 95]]
    assert record["data"]["normalization"]["applied"]["domain_A"] == {"mode": "minmax_fixed", "shift": 0.0, "scale": 0.32467}
    assert json.loads((tmp_path / "metrics.json").read_text())["data"]["manifest"]["sha256"] == manifest["sha256"]
