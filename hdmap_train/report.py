"""`python -m hdmap_train.report SWEEP_DIR`: rebuild a sweep's summary files (hdmap_train.sweep.summary)."""

import sys
from pathlib import Path

from hdmap_train.errors import HdmapError
from hdmap_train.sweep.markdown import status_counts
from hdmap_train.sweep.summary import SUMMARY_FILES, write_summary


def main(argv: list[str] | None = None) -> int:
    """`python -m hdmap_train.report SWEEP_DIR`: rebuild the summary files; prints where they are."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m hdmap_train.report SWEEP_DIR   (e.g. multirun/2026-11-22/10-00-00)", file=sys.stderr)
        return 2
    sweep_dir = Path(args[0])
    try:
        table = write_summary(sweep_dir)
    except HdmapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(table)} jobs ({status_counts(table)})")
    print("\n".join(str(sweep_dir / name) for name in SUMMARY_FILES if (sweep_dir / name).is_file()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
