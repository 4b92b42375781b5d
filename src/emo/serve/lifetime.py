"""The server's processes end with the process that started them: a worker whose parent was killed (SIGKILL, a
crash) gets SIGKILL too, instead of holding the port and the model's memory as an orphan. Linux; elsewhere nothing."""

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the calling process: SIGKILL when its parent ends (kept across exec, cleared in forked children)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
