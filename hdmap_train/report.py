"""`python -m hdmap_train.report SWEEP_DIR [SWEEP_DIR ...]`: rebuild each sweep's summary files (hdmap_train.sweep.summary)."""

import sys
from pathlib import Path

from hdmap_train.errors import HdmapError
from hdmap_train.sweep.markdown import status_counts
from hdmap_train.sweep.summary import SUMMARY_FILES, write_summary


def main(argv: list[str] | None = None) -> int:
    """`python -m hdmap_train.report SWEEP_DIR [SWEEP_DIR ...]`: one summary per directory; prints where each is.

    Returns 1 if any directory could not be summarised (the others still are), 2 on a usage error.
    """
    args = sys.argv[1:] if argv is None else argv
    if not args or any(arg.startswith("-") for arg in args):
        print("usage: python -m hdmap_train.report SWEEP_DIR [SWEEP_DIR ...]   (e.g. multirun/2026-11-22/10-00-00)",
              file=sys.stderr)
        return 2
    status = 0
    for sweep_dir in map(Path, args):
        if len(args) > 1:
            print(f"== {sweep_dir}")
        try:
            table = write_summary(sweep_dir)
        except HdmapError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"{len(table)} jobs ({status_counts(table)})")
        print("\n".join(str(sweep_dir / name) for name in SUMMARY_FILES if (sweep_dir / name).is_file()))
    return status


if __name__ == "__main__":
    sys.exit(main())
