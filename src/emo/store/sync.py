"""`emo sync`: send the records that a tracking outage kept in run folders, once their processes have ended.

    python -m emo sync [--root outputs] [--timeout_s 300]
"""

import sys
from pathlib import Path

from jsonargparse import auto_cli

from emo.store.journal import JOURNAL, Journal, JournalBusyError, pending_journals, read_entries
from emo.store.sender import Sender


def sync(root: Path, timeout_s: float = 300, out=sys.stderr) -> bool:
    """Sends the unsent lines of every journal under `root` whose process has ended; True when all arrived."""
    complete = True
    for folder in pending_journals(root):
        header = read_entries(folder / JOURNAL)[0]
        try:
            journal = Journal(folder, run_id=header["run_id"], tracking_uri=header["tracking_uri"])
        except JournalBusyError:
            continue  # its own process is alive and sending
        count = journal.unsent
        sender = Sender(journal, heartbeat_s=0)
        sender.start()
        done = sender.stop(timeout_s)
        journal.close()
        print(f"emo: {'sent' if done else 'could not send'} {count if done else journal.unsent} records of run "
              f"{journal.run_id} to {header['tracking_uri']}", file=out)  # fmt: skip
        complete &= done
    return complete


def send(root: str = "outputs", timeout_s: float = 300) -> None:
    """Send the records that a tracking outage kept in the run folders under `root`.

    Args:
        root: The trainer's default_root_dir of the runs (their journals are in <root>/<experiment>/<run>/).
        timeout_s: Give up on a run whose server does not take its records in this time.
    """
    if not sync(Path(root), timeout_s):
        raise SystemExit("emo: error: some records could not be sent; they stay in their journals")


def main(args=None) -> None:
    auto_cli(send, args=args)
