"""`python -m hdmap_train.report dir=<sweep dir> [dir=...]`: rebuild each sweep's summary files (hdmap_train.sweep.summary).

The summary modules (pandas, matplotlib, scipy) are imported once the arguments are checked: usage errors answer at once.
"""

import sys
from pathlib import Path

from hdmap_train.arguments import Command, Key, run_command
from hdmap_train.errors import HdmapError

COMMAND = Command(
    "report", "Rebuild a sweep's summary files (summary.csv/md/png/tex, summary_stats.csv, results_long.csv) from its "
    "job folders, finished or not.",
    (Key("dir", "a sweep directory, e.g. multirun/2026-11-22/10-00-00", required=True, path=True, many=True),),
    ("dir=multirun/2026-11-22/10-00-00", "dir=multirun/2026-11-22/10-00-00 dir=multirun/2026-11-23/09-00-00"),
    bare="dir",
)


def report(options: dict, overrides: list) -> int:
    """One summary per directory; prints where each is. 1 if any directory could not be summarised (the others are)."""
    del overrides
    from hdmap_train.sweep.markdown import status_counts
    from hdmap_train.sweep.summary import SUMMARY_FILES, write_summary

    status = 0
    directories = [Path(d) for d in options["dir"]]
    for sweep_dir in directories:
        if len(directories) > 1:
            print(f"== {sweep_dir}")
        try:
            table = write_summary(sweep_dir)
        except HdmapError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        except OSError as exc:  # a read-only or full sweep folder
            print(f"error: cannot write the summary into {sweep_dir} ({exc.strerror}): make the folder writable, or "
                  "copy it somewhere writable and report the copy.", file=sys.stderr)
            status = 1
            continue
        print(f"{len(table)} jobs ({status_counts(table)})")
        print("\n".join(str(sweep_dir / name) for name in SUMMARY_FILES if (sweep_dir / name).is_file()))
    return status


def main(argv: list[str] | None = None) -> int:
    """`python -m hdmap_train.report dir=<sweep dir> [dir=...]`: exit 0, 1 if a directory failed, 2 on a usage error."""
    return run_command(COMMAND, report, argv)


if __name__ == "__main__":
    sys.exit(main())
