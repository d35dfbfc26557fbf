"""User-facing errors: one readable message naming the problem and the fix, no traceback."""


class HdmapError(Exception):
    """Bad input or configuration. The message says what is wrong and how to fix it."""
