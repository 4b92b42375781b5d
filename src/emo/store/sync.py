"""`emo sync`: send the records that a tracking outage kept in run folders, once their processes have ended.

python -m emo sync [--root outputs] [--timeout_s 300]
"""

import os
import sys
from pathlib import Path

from jsonargparse import auto_cli

from emo import UserError
from emo.arguments import OneLineParser
from emo.redact import without_userinfo
from emo.store.journal import JOURNAL, Journal, JournalBusyError, pending_journals, read_entries
from emo.store.sender import Sender


def sending_uri(recorded: str, given: str | None = None) -> str:
    """Where to send a journal recorded for `recorded` (a URI without credentials): the URI given to `emo sync`, or
    else MLFLOW_TRACKING_URI, when it names the same store (credentials and all); else `recorded`, to which MLflow
    adds MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) from the environment."""
    for candidate in (given, os.environ.get("MLFLOW_TRACKING_URI")):
        if candidate and without_userinfo(candidate) == without_userinfo(recorded):
            return candidate
    return without_userinfo(recorded)


def sync(root: Path, timeout_s: float = 300, out=sys.stderr, tracking_uri: str | None = None) -> bool:
    """Sends the unsent lines of every journal under `root` whose process has ended; True when all arrived."""
    complete = True
    for folder in pending_journals(root):
        header = read_entries(folder / JOURNAL)[0]
        try:
            journal = Journal(
                folder, run_id=header["run_id"], tracking_uri=sending_uri(header["tracking_uri"], tracking_uri)
            )
        except JournalBusyError:
            continue  # its own process is alive and sending
        count = journal.unsent
        sender = Sender(journal, heartbeat_s=0)
        sender.start()
        done = sender.stop(timeout_s)
        journal.close()
        why = f": {sender.failure}" if sender.failure else ""
        print(
            f"emo: {'sent' if done else 'could not send'} {count if done else journal.unsent} records of run "
            f"{journal.run_id} to {header['tracking_uri']}{why}",
            file=out,
        )
        complete &= done
    return complete


def send(root: str = "outputs", timeout_s: float = 300, tracking_uri: str | None = None) -> None:
    """Send the records that a tracking outage kept in the run folders under `root`.

    Args:
        root: The trainer's default_root_dir of the runs (their journals are in <root>/<experiment>/<run>/).
        timeout_s: Give up on a run whose server does not take its records in this time.
        tracking_uri: The server's URI with its credentials (http://user:password@host:port), for runs recorded to
            that server; else MLFLOW_TRACKING_URI, or the credentials in MLFLOW_TRACKING_USERNAME and _PASSWORD.
    """
    if not Path(root).is_dir():
        raise UserError(f"--root {root}: no such folder (give the default_root_dir of the runs, e.g. outputs)")
    if not sync(Path(root), timeout_s, tracking_uri=tracking_uri):
        raise UserError("some records could not be sent; they stay in their journals")


def main(args=None) -> None:
    auto_cli(send, args=args, parser_class=OneLineParser)
