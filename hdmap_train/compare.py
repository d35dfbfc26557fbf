"""`python -m hdmap_train.compare DIR DIR [DIR ...]`: paired AUROC comparison of the conditions in run or sweep
directories (hdmap_train.sweep.comparison), as Markdown on stdout and, with --out, comparison.md and comparison.csv.

Only argparse is imported before the arguments are checked, so usage errors answer at once.
"""

import argparse
import logging
import sys
from pathlib import Path

from hdmap_train.errors import HdmapError


def parser() -> argparse.ArgumentParser:
    """The command line: directories, --out, --resamples, --seed."""
    cli = argparse.ArgumentParser(
        prog="python -m hdmap_train.compare",
        description="Compare conditions tested on the same images: AUROC differences per evaluated domain with a paired "
        "bootstrap interval over test images, a Wilcoxon signed-rank test over (source, seed, domain) pairs, mean ranks.",
    )
    cli.add_argument("directories", nargs="+", type=Path, metavar="DIR",
                     help="run directories (metrics.json + predictions.csv) or sweep directories (job folders)")
    cli.add_argument("--out", type=Path, metavar="DIR", help="also write DIR/comparison.md and DIR/comparison.csv")
    cli.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    cli.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    return cli


def main(argv: list[str] | None = None) -> int:
    """Print the comparison (exit 0); HdmapError: one line, exit 1; usage errors: exit 2."""
    cli = parser()
    args = cli.parse_args(argv)
    missing = [str(d) for d in args.directories if not d.is_dir()]
    if missing:
        cli.error(f"not a directory: {', '.join(missing)}")
    if args.resamples < 1:
        cli.error("--resamples must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="[%(levelname)s] %(message)s")
    from hdmap_train.sweep.comparison import compare, comparison_markdown

    try:
        comparison = compare(args.directories, args.resamples, args.seed)
    except HdmapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    markdown = comparison_markdown(comparison)
    print(markdown, end="")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "comparison.md").write_text(markdown)
        comparison.rows.to_csv(args.out / "comparison.csv", index=False)
        print(f"written: {args.out / 'comparison.md'}, {args.out / 'comparison.csv'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
