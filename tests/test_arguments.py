"""One argument style for every command (hdmap_train.arguments): Hydra-style key=value, literal paths, help exit 0."""

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hdmap_train.arguments import Command, Key, run_command
from hdmap_train.catalog import main as catalog_main
from hdmap_train.errors import HdmapError
from hdmap_train.report import main as report_main

COMMAND = Command("example", "What it does.", (
    Key("dir", "a folder", required=True, path=True, many=True),
    Key("out", "where to write", path=True),
    Key("seed", "a seed", default=0, kind=int),
    Key("targets", "domains"),
), ("dir=multirun/x",))


def test_values_use_hydras_grammar_and_paths_are_literal() -> None:
    folder = "multirun/2026-12-01/10-00-00/domain=A,model=draem"
    options, overrides = COMMAND.parse([f"dir={folder}", "dir=b", f"out={folder}/x", "seed=3", "targets=[B,C]"])
    assert options == {"dir": [folder, "b"], "out": f"{folder}/x", "seed": 3, "targets": ["B", "C"]}
    assert overrides == []


@pytest.mark.parametrize(("args", "message"), [
    (["multirun/x"], "multirun/x: example takes key=value arguments, e.g. python -m hdmap_train.example dir=multirun/x"),
    (["--out", "x"], "--out: example takes key=value arguments, e.g. python -m hdmap_train.example dir=multirun/x"),
    (["dir=a", "--out", "x"], "--out: example takes key=value arguments: python -m hdmap_train.example dir=a out=x"),
    (["dir=a", "--seed=2"], "--seed=2: example takes key=value arguments: python -m hdmap_train.example dir=a seed=2"),
    (["seed=1"], "dir= is required"),
    (["dir=a", "colour=red"], "colour= is not an argument of example: it takes dir=, out=, seed=, targets="),
    (["dir=a", "seed=abc"], "seed=abc must be a whole number"),
    (["dir=a", "seed=1", "seed=2"], "seed= is given twice"),
    (["dir=a", "targets=B,C"], "targets=B,C: example takes single key=value arguments only"),
])
def test_usage_errors_name_the_argument(args: list[str], message: str) -> None:
    with pytest.raises(HdmapError, match="^" + message.replace("[", r"\[").replace(".", r"\.")):
        COMMAND.parse(args)


def test_help_exits_zero_and_a_usage_error_two(capsys: pytest.CaptureFixture) -> None:
    assert run_command(COMMAND, lambda options, overrides: None, ["--help"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage: python -m hdmap_train.example dir=<dir> [out=<out>]") and "(repeat it for several)" in shown
    assert run_command(COMMAND, lambda options, overrides: None, ["x"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("usage: ") and err[1].startswith("error: x: ")


@pytest.mark.parametrize(("module", "args", "message"), [
    ("report", ["multirun/x"], "multirun/x: report takes key=value arguments: python -m hdmap_train.report dir=multirun/x"),
    ("report", ["a", "b c"], "a: report takes key=value arguments: python -m hdmap_train.report dir=a 'dir=b c'"),
    ("compare", ["runs/a", "runs/b", "--out", "cmp", "--resamples", "100"],
     "runs/a: compare takes key=value arguments: python -m hdmap_train.compare dir=runs/a dir=runs/b out=cmp resamples=100"),
    ("compare", ["s/domain=A,model=draem", "s/domain=B,model=draem"],   # job folders: '=' and ',' in a bare path
     "s/domain=A,model=draem: compare takes key=value arguments: python -m hdmap_train.compare "
     "dir=s/domain=A,model=draem dir=s/domain=B,model=draem"),
    ("catalog", ["draem"], "draem: catalog takes key=value arguments: python -m hdmap_train.catalog model=draem"),
    ("catalog", ["draem", "patchcore"],
     "draem: catalog takes key=value arguments: python -m hdmap_train.catalog 'model=[draem,patchcore]'"),
    ("weights", ["download", "model=all", "size=cpu"],
     "download: weights takes key=value arguments: python -m hdmap_train.weights model=all size=cpu"),
    ("weights", ["download"], "download: weights takes key=value arguments, e.g. python -m hdmap_train.weights model=patchcore"),
    ("evaluate", ["s/domain=A,model=draem", "from_predictions=true"],
     "s/domain=A,model=draem: evaluate takes key=value arguments: python -m hdmap_train.evaluate run=s/domain=A,model=draem "
     "from_predictions=true"),
    ("export", ["s/domain=A,model=draem", "--format", "onnx"],
     "s/domain=A,model=draem: export takes key=value arguments: python -m hdmap_train.export run=s/domain=A,model=draem format=onnx"),
])
def test_the_older_forms_are_usage_errors_that_spell_the_new_form(module: str, args: list[str], message: str, capsys) -> None:
    main = importlib.import_module(f"hdmap_train.{module}").main
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith(f"usage: python -m hdmap_train.{module} ") and err[1] == f"error: {message}"


def test_report_tries_every_repeated_dir(tmp_path: Path, capsys) -> None:
    assert report_main([f"dir={tmp_path / 'a'}", f"dir={tmp_path / 'b'}"]) == 1  # each is tried, both fail
    err = capsys.readouterr().err
    assert f"{tmp_path / 'a'} does not exist" in err and f"{tmp_path / 'b'} does not exist" in err


def test_catalog_names_an_unknown_model_in_one_line(capsys) -> None:
    assert catalog_main(["model=[draem,nosuch]"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown model(s): nosuch; known: ") and "draem" in err[0]


def test_commands_answer_usage_errors_without_heavy_imports() -> None:
    """Usage errors (and --help) come before torch, pandas, matplotlib, anomalib are imported: they answer at once."""
    probe = textwrap.dedent("""
        import importlib, sys
        for name in ("report", "compare", "catalog", "weights", "evaluate", "export"):
            assert importlib.import_module("hdmap_train." + name).main(["bare"]) == 2, name
        print(sorted(n for n in ("torch", "pandas", "matplotlib", "scipy", "timm", "lightning", "anomalib") if n in sys.modules))
    """)
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.strip() == "[]"


def test_output_piped_into_a_reader_that_stops_early_ends_without_a_traceback() -> None:
    """`python -m hdmap_train.catalog | head -1`: the reader closes the pipe; exit 1, no BrokenPipeError traceback."""
    probe = textwrap.dedent("""
        import os, sys
        from hdmap_train.catalog import main

        def closed_pipe():
            read, write = os.pipe()
            os.close(read)
            sys.stdout = os.fdopen(write, "w")

        closed_pipe()
        shown = main(["--help"])
        closed_pipe()
        print(shown, main(["model=draem"]), file=sys.stderr)
    """)
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert shown.returncode == 0 and shown.stderr == "1 1\n", shown.stderr[-2000:]
