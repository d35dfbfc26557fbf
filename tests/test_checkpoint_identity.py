"""A checkpoint carries the config that wrote it: one of another config is never resumed or evaluated as this run's,
a run that trains anew finds no stale checkpoint, and every damaged or foreign checkpoint is one line."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from hdmap_train import train
from hdmap_train.checkpoints import STAMP, config_hash, read_stamp
from hdmap_train.data import datamodule as datamodule_module
from hdmap_train.errors import HdmapError
from hdmap_train.evaluate import main as evaluate_main
from hdmap_train.export import main as export_main
from hdmap_train.run_dir import best_checkpoint, earlier_attempt
from helpers.runs import tiny_run_cfg


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch tiny DRAEM run (copy it before changing it)."""
    run_dir = tmp_path_factory.mktemp("run")
    train.run(tiny_run_cfg("draem", tiny_dataset, run_dir, "evaluation.plots=false", "model.max_epochs=1"), run_dir)
    return run_dir


def copy_run(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to)
    return to


def restamp(path: Path, **config_changes) -> None:
    """Rewrite a checkpoint as if another config (config_changes: dotted key -> value) had written it."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    config = json.loads(json.dumps(state[STAMP]["config"]))
    for key, value in config_changes.items():
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[last] = value
    state[STAMP] = {"hash": config_hash(config), "config": config}
    torch.save(state, path)


@pytest.fixture
def no_data_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the checkpoint must be refused before any data is read")

    monkeypatch.setattr(datamodule_module, "build_datamodule", refuse)


def test_every_checkpoint_carries_the_hash_of_its_run_config(tiny_run: Path) -> None:
    record = json.loads((tiny_run / "metrics.json").read_text())
    assert record["condition"]["config_hash"] == config_hash(record["condition"]["config"])
    for name in ("best.ckpt", "last.ckpt"):
        assert read_stamp(tiny_run / "checkpoints" / name)["hash"] == record["condition"]["config_hash"], name


def test_last_checkpoint_of_another_config_is_set_aside_not_resumed(tiny_run: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    run_dir = copy_run(tiny_run, tmp_path / "run")
    (run_dir / "metrics.json").unlink()  # killed after its first checkpoint
    same = tiny_run_cfg("draem", tiny_dataset, run_dir, "evaluation.plots=false", "model.max_epochs=1")
    assert earlier_attempt(same, run_dir) == (None, str(run_dir / "checkpoints" / "last.ckpt"))
    other = tiny_run_cfg("draem", tiny_dataset, run_dir, "evaluation.plots=false", "model.max_epochs=1",
                         "model.module.learning_rate=0.01")
    assert earlier_attempt(other, run_dir) == (None, None)
    assert not (run_dir / "checkpoints").exists()
    [kept] = run_dir.glob("checkpoints.set-aside-*")
    assert sorted(p.name for p in kept.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_training_anew_over_a_failed_record_of_another_config_starts_without_its_checkpoints(
        tiny_run: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    run_dir = copy_run(tiny_run, tmp_path / "run")
    record = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps(record | {"status": "failed", "error": "killed"}))
    other = tiny_run_cfg("draem", tiny_dataset, run_dir, "evaluation.plots=false", "model.max_epochs=1", "seed=7")
    assert earlier_attempt(other, run_dir) == (None, None)
    assert not (run_dir / "checkpoints").exists()  # no best-v1.ckpt beside the old config's best.ckpt, no old last.ckpt
    assert len(list(run_dir.glob("checkpoints.set-aside-*/last.ckpt"))) == 1


def test_a_given_ckpt_path_of_another_config_is_refused(tiny_run: Path, tiny_dataset: Path, tmp_path: Path,
                                                       no_data_setup: None) -> None:
    last = tiny_run / "checkpoints" / "last.ckpt"
    cfg = tiny_run_cfg("draem", tiny_dataset, tmp_path, "model.module.learning_rate=0.01", f"ckpt_path={last}")
    with pytest.raises(HdmapError, match="was written by another config \\(it differs in model.module.learning_rate\\)"):
        train.run(cfg, tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


def test_a_copied_run_is_evaluated_with_its_own_checkpoint(tiny_run: Path, tmp_path: Path, capsys) -> None:
    original = copy_run(tiny_run, tmp_path / "original")
    record = json.loads((original / "metrics.json").read_text())
    record["best_checkpoint"] = str(original / "checkpoints" / "best.ckpt")
    (original / "metrics.json").write_text(json.dumps(record))
    copy = copy_run(original, tmp_path / "copy")
    restamp(original / "checkpoints" / "best.ckpt", **{"domain.source": "B"})  # the original retrained on domain B
    assert best_checkpoint(copy, record, "") == copy / "checkpoints" / "best.ckpt"
    shutil.rmtree(copy / "checkpoints")  # copied without its checkpoints: the recorded one is another config's
    with pytest.raises(HdmapError, match="was not written by the run .*it differs in domain.source.*refused"):
        best_checkpoint(copy, record, "")
    assert export_main([f"run={copy}", "format=torch"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "it differs in domain.source" in error[0]


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert "Traceback" not in captured.out + captured.err and len(lines) == 1, captured.err[-3000:]
    assert lines[0].startswith("error: ")
    return lines[0]


def successes(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.glob("evaluations/*/metrics.json") if json.loads(p.read_text())["status"] == "success"]


class Payload:
    """A pickled object that would run code when loaded with weights_only=False."""

    def __reduce__(self):
        return (print, ("this ran",))


@pytest.mark.parametrize("damage", ["truncated", "other_model", "pickle"])
def test_evaluate_and_export_of_a_damaged_or_foreign_checkpoint_is_one_line(damage: str, tiny_run: Path, tmp_path: Path,
                                                                          capsys) -> None:
    run_dir = copy_run(tiny_run, tmp_path / "run")
    best = run_dir / "checkpoints" / "best.ckpt"
    if damage == "truncated":
        data = best.read_bytes()
        best.write_bytes(data[: len(data) // 2])
        expected = "is truncated or corrupt"
    elif damage == "other_model":  # another model's weights, written by another program (no config stamp)
        torch.save({"state_dict": {"model.backbone.weight": torch.zeros(3)}, "pytorch-lightning_version": "2.6.6"}, best)
        expected = "does not fit the run's model draem"
    else:
        torch.save({"state_dict": {}, "payload": Payload()}, best)
        expected = "print, not only tensors and numbers: refused, because loading it would run code"
    assert evaluate_main([f"run={run_dir}", "evaluation.plots=false"]) == 1
    line = one_error_line(capsys)
    assert expected in line and "weights_only=False" not in line
    assert not successes(run_dir)
    assert export_main([f"run={run_dir}", "format=torch"]) == 1
    assert expected in one_error_line(capsys)
    assert not (run_dir / "export" / "torch" / "export.json").exists()


def test_a_patchcore_checkpoint_loads_under_weights_only(tiny_dataset: Path, tmp_path: Path) -> None:
    """Its hyper-parameters hold anomalib's PrecisionType, allowed by name (evaluate and export of PatchCore runs)."""
    from hdmap_train.checkpoints import load_model
    from helpers.runs import tiny_run_cfg

    record = train.run(tiny_run_cfg("patchcore", tiny_dataset, tmp_path, "weights=random", "evaluation.plots=false"), tmp_path)
    model = load_model(record["condition"]["config"]["model"], Path(record["best_checkpoint"]))
    assert type(model).__name__ == "HDMAPPatchcore"
