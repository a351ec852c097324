"""The one exception type for user mistakes (bad files, bad flags, bad configs)."""

from __future__ import annotations


class HfMtlError(ValueError):
    """A user-facing error: one line that names the file (and line) or the flag at fault.

    `run_mtl.py` prints it without a traceback and exits non-zero. It subclasses `ValueError` so that code which
    already catches `ValueError` keeps working.
    """
