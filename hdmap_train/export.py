"""`python -m hdmap_train.export run=<run dir> format=onnx|openvino|torch [out=<dir>]`: a finished run's best
checkpoint as a deployable model (anomalib's own export), with export.json beside it.

The exported model is the whole AnomalibModule forward: the run's pre-processor (ImageNet Normalize for
pretrained backbones, else none), the model, raw scores (no anomalib normalisation or thresholding). It
does not resize: hdmap_train's datamodule hands it images already at data.image_size, in its data
normalisation. export.json carries what a deployment needs besides: the run's validation threshold
(fault if pred_score > threshold), the input size and channels, the data normalisation, and the source run.

Every export is checked before it is kept (hdmap_train.export_parity): the exported file scores the run's own
test images through its runtime as the checkpoint does, within `tolerance=` x the scores' range; export.json's
`parity` says by how much. Beyond it the export fails with one line and nothing is written (a previous export
in the directory is left as it was). The default directory is <run>/export/<format>/; an export of the same
format there is replaced, nothing else of the run is changed. Only light modules are imported until the
arguments and the run are checked.
"""

import contextlib
import importlib
import shutil
import sys
import tempfile
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

from hdmap_train.arguments import Command, Key, run_command
from hdmap_train.checkpoints import load_model
from hdmap_train.errors import HdmapError
from hdmap_train.export_parity import TOLERANCE, check_tolerance
from hdmap_train.results import RunRecord
from hdmap_train.run_dir import best_checkpoint, finished_record

COMMAND = Command(
    "export", "A finished run's best checkpoint as a deployable model (anomalib's export), with export.json: the "
    "threshold, input size, channels and data normalisation a deployment needs.",
    (Key("run", "the run directory (holding metrics.json)", required=True, path=True),
     Key("format", "onnx, openvino or torch", required=True),
     Key("out", "the output directory (default <run>/export/<format>/)", path=True),
     Key("tolerance", f"largest score difference exported vs checkpoint, x the scores' range (default {TOLERANCE:g})",
         default=TOLERANCE, kind=float)),
    ("run=outputs/2026-11-22/10-00-00_draem_A format=onnx",), bare="run",
)
# The packages each format needs beyond hdmap_train's own (torch.onnx's exporter needs onnx and onnxscript).
PACKAGES = {"torch": (), "onnx": ("onnx", "onnxscript", "onnxruntime"), "openvino": ("onnx", "onnxscript", "openvino")}
INSTALL = {"onnx": "pip install -e '.[export]'", "openvino": "pip install -e '.[export]' openvino"}
ONNX_OPSET = 18  # what torch's dynamo exporter writes natively (anomalib's default 14 fails to convert, then falls back)
LOADING = {
    "torch": "torch.load('model.pt', weights_only=False)['model'].eval()(x).pred_score  (a pickle: needs hdmap_train "
             "and anomalib installed; load only files you trust)",
    "onnx": "onnxruntime.InferenceSession('model.onnx').run(['pred_score'], {'input': x})[0]",
    "openvino": "openvino.Core().compile_model('model.xml')(x)['pred_score']",
}


def check_format(fmt: str) -> None:
    """The format is known and its packages import; HdmapError naming what to install otherwise."""
    if fmt not in PACKAGES:
        raise HdmapError(f"format={fmt} is not an export format: use one of {', '.join(PACKAGES)}.")
    missing = []
    for package in PACKAGES[fmt]:
        try:
            importlib.import_module(package)
        except ImportError:
            missing.append(package)
    if missing:
        raise HdmapError(f"format={fmt} needs the package(s) {', '.join(missing)}, not installed: {INSTALL[fmt]}.")


def metadata(run_dir: Path, record: RunRecord, checkpoint: Path, fmt: str, files: list[str], model, parity: dict) -> dict:
    """export.json: how to feed the exported model, how to read its score, and where it came from."""
    from hdmap_train.results import package_versions

    data = record["data"]
    height, width = data["image_size"]
    transform = model.pre_processor.transform if model.pre_processor else None
    versions = package_versions() | {p: version(p) for p in PACKAGES[fmt]}
    return {
        "format": fmt,
        "model_file": files[0],
        "files": files,
        "load": LOADING[fmt],
        "source_run": str(run_dir.resolve()),
        "checkpoint": str(checkpoint.resolve()),
        "model": record["condition"]["model"],
        "source_domain": record["source_domain"],
        "threshold": record["validation"]["threshold"],
        "threshold_quantile": record["validation"]["threshold_quantile"],
        "score": {
            "output": "pred_score",
            "meaning": "raw anomaly score (no anomalib normalisation): higher = more anomalous; fault if pred_score > threshold",
            "other_outputs": "anomaly_map where the model has one (raw, input resolution)",
        },
        "input": {
            "name": "input",
            "shape": ["batch", data["channels"], height, width],
            "dtype": "float32",
            "image_size": [height, width],
            "channels": data["channels"],
            "channel_note": "3 = the grey image replicated on every channel, 1 = the grey image",
            "resize": data["resize"],
            "resizing": "not in the model: images arrive already resized to image_size by hdmap_train's datamodule "
                        "(data.resize), in the data normalisation below",
            "pre_processing_in_model": repr(transform) if transform is not None else "none",
        },
        "data_normalization": data["normalization"],
        "parity": parity,
        "versions": versions,
        "created": datetime.now().isoformat(timespec="seconds"),
    }


def export(run_dir: Path, fmt: str, out: str | None = None, tolerance: float = TOLERANCE) -> tuple[Path, dict]:
    """Export the run's best checkpoint as `fmt` into out (default <run>/export/<fmt>/), checked for parity with the
    checkpoint: (that directory, export.json).
    """
    check_format(fmt)
    tolerance = check_tolerance(tolerance)
    record = finished_record(run_dir)
    channels = record["data"]["channels"]
    if fmt != "torch" and channels != 3:
        raise HdmapError(f"{run_dir} was trained with data.channels={channels}; anomalib's {fmt} export traces a "
                         "3-channel input, so only format=torch exports it.")
    checkpoint = best_checkpoint(run_dir, record, "nothing to export")
    out_dir = Path(out) if out is not None else run_dir / "export" / fmt
    created = [folder for folder in (out_dir, *out_dir.parents) if not folder.exists()]  # deepest first
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HdmapError(f"Cannot create out={out_dir} ({exc.strerror}): choose a writable directory.") from None
    try:
        return exported(run_dir, record, checkpoint, fmt, out_dir, tolerance)
    except BaseException:
        for folder in created:  # a failed export leaves no empty folders of its own
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def exported(run_dir: Path, record: RunRecord, checkpoint: Path, fmt: str, out_dir: Path, tolerance: float) -> tuple[Path, dict]:
    """Export into a temporary folder in out_dir, check parity there, then move the files and write export.json."""
    from hdmap_train.atomic_files import write_json_atomic
    from hdmap_train.export_parity import exported_scorer, measure_parity, parity_block
    from hdmap_train.export_patches import export_friendly

    model = load_model(record["condition"]["config"]["model"], checkpoint)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
        size = tuple(record["data"]["image_size"])
        if fmt == "torch":
            path = model.to_torch(tmp)
        else:
            with export_friendly(model):
                if fmt == "onnx":
                    path = model.to_onnx(tmp, input_size=size, opset_version=ONNX_OPSET)
                else:
                    path = model.to_openvino(tmp, input_size=size, onnx_kwargs={"opset_version": ONNX_OPSET})
        scorer, runtime = exported_scorer(fmt, path)
        scores = measure_parity(record, model, scorer)
        parity = parity_block(scores, float(record["validation"]["threshold"]), tolerance, runtime)
        # anomalib writes <root>/weights/<format>/model.*; every file of it (e.g. model.onnx.data) moves out together
        files = [path.name, *sorted(p.name for p in path.parent.iterdir() if p != path)]
        (out_dir / "export.json").unlink(missing_ok=True)  # an earlier export's record never describes these files
        for name in files:
            shutil.move(path.parent / name, out_dir / name)
    info = metadata(run_dir, record, checkpoint, fmt, files, model, parity)
    write_json_atomic(out_dir / "export.json", info)
    return out_dir, info


def main(argv: list[str] | None = None) -> int:
    """Export (exit 0); HdmapError: one line, exit 1; usage errors: exit 2."""
    return run_command(COMMAND, export_from_arguments, argv)


def export_from_arguments(options: dict, overrides: list) -> None:
    """export() with the command line's options; prints where the model and its metadata are."""
    del overrides
    out_dir, info = export(Path(options["run"]), str(options["format"]), options["out"], options["tolerance"])
    parity = info["parity"]
    print(f"{info['format']} model: {out_dir / info['model_file']}")
    print(f"parity on {parity['images']} test images ({parity['runtime']}): max |difference| "
          f"{parity['max_abs_difference']:.3g} <= tolerance {parity['tolerance']:.3g}, decisions agree "
          f"{parity['decision_agreement']:.1%}")
    print(f"metadata: {out_dir / 'export.json'} (threshold {info['threshold']:.6g}: fault if pred_score > threshold)")


if __name__ == "__main__":
    sys.exit(main())
