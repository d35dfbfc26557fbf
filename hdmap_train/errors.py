"""User-facing errors: one readable message naming the problem and the fix, no traceback."""

import sys
from collections.abc import Callable


class HdmapError(Exception):
    """Bad input or configuration. The message says what is wrong and how to fix it."""


def run_command(usage: str, parse: Callable, act: Callable, argv: list[str] | None = None) -> int:
    """A `key=value` command line: -h/--help prints usage (exit 0); parse(args) raising HdmapError is a usage
    error (usage and the line, exit 2); act(parse(args)) raising HdmapError prints its line (exit 1); else 0.
    """
    args = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(args):
        print(usage)
        return 0
    try:
        options = parse(args)
    except HdmapError as exc:
        print(f"{usage}\nerror: {exc}", file=sys.stderr)
        return 2
    try:
        act(options)
    except HdmapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
