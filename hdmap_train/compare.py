"""`python -m hdmap_train.compare dir=<dir> [dir=...] [out=<dir>] [resamples=2000] [seed=0]`: paired AUROC comparison
of the conditions in run or sweep directories (hdmap_train.sweep.comparison), as Markdown on stdout and, with
out=, comparison.md, comparison.csv, official_score.csv (runs scored with evaluation.protocol=dcase) and the
critical-difference diagram.

Only light modules are imported before the arguments are checked, so usage errors answer at once.
"""

import logging
import sys
from pathlib import Path

from hdmap_train.arguments import Command, Key, run_command
from hdmap_train.errors import HdmapError

COMMAND = Command(
    "compare", "Compare conditions tested on the same images: AUROC differences per evaluated domain with a seed-level "
    "and an image-level interval, a paired t-test and Wilcoxon test over (source, seed) runs, mean ranks.",
    (Key("dir", "a run directory (metrics.json + predictions.csv) or a sweep directory", required=True, path=True, many=True),
     Key("out", "also write <out>/comparison.md, comparison.csv, critical_difference.png (and official_score.csv)", path=True),
     Key("resamples", "bootstrap resamples (default 2000)", default=2000, kind=int),
     Key("seed", "bootstrap seed (default 0)", default=0, kind=int)),
    ("dir=multirun/2026-12-01/10-00-00 out=comparison/", "dir=outputs/a dir=outputs/b"),
    bare="dir",
)


def compare(options: dict, overrides: list) -> None:
    """Print the comparison; write comparison.md/.csv into out= when given. HdmapError: one line."""
    del overrides
    directories = [Path(d) for d in options["dir"]]
    missing = [str(d) for d in directories if not d.is_dir()]
    if missing:
        raise HdmapError(f"not a directory: {', '.join(missing)}")
    if options["resamples"] < 1:
        raise HdmapError(f"resamples={options['resamples']} must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="[%(levelname)s] %(message)s")
    from hdmap_train.atomic_files import write_atomic, write_csv_atomic
    from hdmap_train.sweep.comparison import compare as paired_comparison
    from hdmap_train.sweep.comparison_report import comparison_markdown
    from hdmap_train.sweep.significance import critical_difference_figure

    comparison = paired_comparison(directories, options["resamples"], options["seed"])
    markdown = comparison_markdown(comparison)
    print(markdown, end="")
    if options["out"]:
        out = Path(options["out"])
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "comparison.md", lambda file: file.write(markdown))
        write_csv_atomic(out / "comparison.csv", comparison.rows)
        written = [out / "comparison.md", out / "comparison.csv"]
        if not comparison.official.empty:
            write_csv_atomic(out / "official_score.csv", comparison.official)
            written.append(out / "official_score.csv")
        if comparison.ranking["nemenyi"] is not None:
            critical_difference_figure(comparison.ranking["mean_ranks"], comparison.ranking["nemenyi"],
                                       out / "critical_difference.png")
            written.append(out / "critical_difference.png")
        print(f"written: {', '.join(map(str, written))}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Print the comparison (exit 0); HdmapError: one line, exit 1; usage errors: exit 2."""
    return run_command(COMMAND, compare, argv)


if __name__ == "__main__":
    sys.exit(main())
