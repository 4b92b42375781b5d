"""The server's processes end with the process that started them, and only the HTTP worker keeps the listening
socket: a worker whose parent was killed (SIGKILL, a crash) gets SIGKILL too, instead of holding the port and the
model's memory as an orphan. Linux; elsewhere nothing."""

import ctypes
import os
import signal
import socket
import stat
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the calling process: SIGKILL when its parent ends (kept across exec, cleared in forked children)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def close_sockets_on(port: int) -> None:
    """In a forked helper that serves no HTTP (LitServe's queue manager): close its copies of the server's socket on
    `port` (bound, and listening once the HTTP worker starts), so that when the HTTP worker closes its own (SIGTERM)
    new connections are refused at once instead of waiting in a backlog nobody reads."""
    if not sys.platform.startswith("linux"):
        return
    for fd in [int(name) for name in os.listdir("/proc/self/fd")]:
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
        except OSError:  # the listing's own descriptor, gone
            continue
        sock = socket.socket(fileno=fd)  # borrowed: detached below, never closed through this object
        try:
            address = sock.getsockname() if sock.family in (socket.AF_INET, socket.AF_INET6) else None
        finally:
            sock.detach()
        if address and address[1] == port:
            os.close(fd)
