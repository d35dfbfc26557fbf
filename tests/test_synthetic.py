"""Tests for the built-in synthetic HDMAP-like dataset generator."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from hdmap_train.data import synthetic
from hdmap_train.data.synthetic import SyntheticSpec, ensure_dataset, generate

SMALL = SyntheticSpec(n_train=6, n_test=4, seed=3)
SPLITS = ("train/good", "test/good", "test/fault")


def _load(folder: Path) -> np.ndarray:
    return np.stack([tifffile.imread(f) for f in sorted(folder.glob("*.tiff"))])


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _line_score(images: np.ndarray) -> np.ndarray:
    """Per image and row r: max over x of min(x[r] - x[r-2], x[r] - x[r+2]) averaged over 10 px.

    High only where a row stands out from the rows two above and two below: a thin bright line.
    """
    ridge = np.minimum(images[:, 2:-2] - images[:, :-4], images[:, 2:-2] - images[:, 4:])
    csum = np.cumsum(np.pad(ridge, ((0, 0), (0, 0), (1, 0))), axis=-1)
    return ((csum[..., 10:] - csum[..., :-10]) / 10).max(axis=-1)


@pytest.fixture(scope="module")
def default_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(SyntheticSpec(), tmp_path_factory.mktemp("syn") / "ds")


def test_layout_counts_and_manifest(default_ds: Path) -> None:
    spec = SyntheticSpec()
    manifest = json.loads((default_ds / "manifest.json").read_text())
    assert manifest["generator"] == "synthetic"
    assert manifest["spec"]["n_train"] == spec.n_train
    assert sorted(p.name for p in default_ds.iterdir() if p.is_dir()) == [f"domain_{d}" for d in "ABCD"]
    for d in "ABCD":
        expected = {"train/good": spec.n_train, "test/good": spec.n_test, "test/fault": spec.n_test}
        assert manifest["counts"][d] == expected
        assert {"scale", "noise"} <= manifest["domains"][d].keys()
        for split, n in expected.items():
            names = sorted(p.name for p in (default_ds / f"domain_{d}" / split).iterdir())
            assert names == [f"{i:06d}.tiff" for i in range(n)]


def test_files_are_float32_finite_non_negative(default_ds: Path) -> None:
    for d in "ABCD":
        for split in SPLITS:
            x = _load(default_ds / f"domain_{d}" / split)
            assert x.dtype == np.float32 and x.shape[1:] == (31, 95)
            assert np.isfinite(x).all() and (x >= 0).all()
            assert x.std(axis=0).mean() > 0, "images within a split must differ"


def test_domain_scales_match_real_order(default_ds: Path) -> None:
    means = {d: _load(default_ds / f"domain_{d}" / "train/good").mean() for d in "ABCD"}
    assert max(means, key=means.get) == "B" and min(means, key=means.get) == "C"
    targets = {"A": 0.32, "B": 1.32, "C": 0.087, "D": 0.42}
    for d, target in targets.items():
        train_max = _load(default_ds / f"domain_{d}" / "train/good").max()
        assert train_max == pytest.approx(target, rel=0.15)
    assert _load(default_ds / "domain_B" / "test/fault").max() > 1.0, "values above 1 must not be clipped"


def test_cold_half_darker_and_flatter_than_warm(default_ds: Path) -> None:
    for d in "ABCD":
        for split in ("test/good", "test/fault"):
            x = _load(default_ds / f"domain_{d}" / split)
            cold, warm = x[: len(x) // 2], x[len(x) // 2 :]
            assert 1.2 < warm.mean() / cold.mean() < 1.6
            if split == "test/good":
                ratio = np.ptp(warm, axis=(1, 2)).mean() / np.ptp(cold, axis=(1, 2)).mean()
                assert 1.4 < ratio < 1.8


def test_faults_are_thin_horizontal_lines(default_ds: Path) -> None:
    scales = json.loads((default_ds / "manifest.json").read_text())["domains"]
    for d in "ABCD":
        threshold = 0.2 * scales[d]["scale"]
        good = _line_score(_load(default_ds / f"domain_{d}" / "test/good"))
        fault = _line_score(_load(default_ds / f"domain_{d}" / "test/fault"))
        assert np.median(fault.max(axis=1)) > 10 * np.percentile(good.max(axis=1), 95)
        assert ((good > threshold).sum(axis=1) == 0).mean() >= 0.95
        rows_hit = (fault > threshold).sum(axis=1)
        assert ((rows_hit >= 1) & (rows_hit <= 6)).mean() >= 0.85, "faults should touch only a few rows"


def test_generation_is_deterministic(tmp_path: Path) -> None:
    a = _files(generate(SMALL, tmp_path / "a"))
    b = _files(generate(SMALL, tmp_path / "b"))
    assert a == b
    c = _files(generate(SyntheticSpec(n_train=6, n_test=4, seed=4), tmp_path / "c"))
    assert a["domain_A/train/good/000000.tiff"] != c["domain_A/train/good/000000.tiff"]
    # A domain's images do not depend on which other domains are generated.
    only_c = _files(generate(SyntheticSpec(n_train=6, n_test=4, seed=3, domains=("C",)), tmp_path / "d"))
    assert all(only_c[k] == a[k] for k in only_c if k.endswith(".tiff"))


def test_pixels_are_unchanged_since_generator_version_1(tmp_path: Path) -> None:
    """Cached datasets are keyed by _GENERATOR_VERSION: content changes must bump it (and this digest)."""
    root = generate(SMALL, tmp_path / "a")
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.tiff")):
        digest.update(tifffile.imread(path).tobytes())
    assert synthetic._GENERATOR_VERSION == 1
    assert digest.hexdigest() == "972ec9eea57f0f745b493c4f727b89abf710b62e644836492b4f83a843bf1817"


def test_generate_refuses_non_empty_root(tmp_path: Path) -> None:
    (tmp_path / "junk").write_text("x")
    with pytest.raises(FileExistsError):
        generate(SMALL, tmp_path)
    with pytest.raises(ValueError):
        generate(SyntheticSpec(n_train=1, n_test=2, domains=("Z",)), tmp_path / "z")


def test_ensure_dataset_generates_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = ensure_dataset(SMALL, tmp_path)
    assert first.parent == tmp_path and first.name.startswith("synthetic-")
    assert (first / "manifest.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [first.name], "no temporary directory is left behind"
    mtime = (first / "manifest.json").stat().st_mtime_ns
    (first / "sentinel").write_text("kept")

    def fail(*args: object, **kwargs: object) -> Path:
        raise AssertionError("must not regenerate")

    monkeypatch.setattr(synthetic, "generate", fail)
    assert ensure_dataset(SMALL, tmp_path) == first
    assert (first / "sentinel").read_text() == "kept"
    assert (first / "manifest.json").stat().st_mtime_ns == mtime
    monkeypatch.undo()
    other = ensure_dataset(SyntheticSpec(n_train=6, n_test=4, seed=4), tmp_path)
    assert other != first


def test_ensure_dataset_ignores_interrupted_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = ensure_dataset(SMALL, tmp_path / "probe").name
    real_generate = synthetic.generate

    def interrupted(spec: SyntheticSpec, root: Path) -> Path:
        (Path(root) / "domain_A").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_dataset(SMALL, tmp_path / "cache")
    assert not (tmp_path / "cache" / name).exists()
    monkeypatch.setattr(synthetic, "generate", real_generate)

    # Leftovers of a killed process (no cleanup) must not be picked up either.
    for leftover in (f".{name}.tmp", f".{name}.tmp-dead", f"{name}.tmp"):
        (tmp_path / "cache" / leftover / "domain_A").mkdir(parents=True)
        (tmp_path / "cache" / leftover / "manifest.json").write_text("{}")
    path = ensure_dataset(SMALL, tmp_path / "cache")
    assert path == tmp_path / "cache" / name
    assert _files(path) == _files(tmp_path / "probe" / name)


def test_ensure_dataset_loses_rename_race_gracefully(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_generate = synthetic.generate
    final = tmp_path / ensure_dataset(SMALL, tmp_path / "probe").name

    def racing(spec: SyntheticSpec, root: Path) -> Path:
        real_generate(spec, final)  # another process finishes first
        (final / "winner").write_text("other")
        return real_generate(spec, root)

    monkeypatch.setattr(synthetic, "generate", racing)
    assert ensure_dataset(SMALL, tmp_path) == final
    assert (final / "winner").read_text() == "other", "the winner's dataset must be kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["probe", final.name])
