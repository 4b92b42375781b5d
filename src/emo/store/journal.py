"""A run's record on local disk: every metric, param, tag, artifact, model, registration and status change of
a run is a line of `<run folder>/journal.jsonl` before anything goes over the network.

The run folder is `<default_root_dir>/<experiment id>/<run id>`, beside `checkpoints/`. A `Sender`
thread (`emo.store.sender`) sends the lines in order and notes in `journal.sent` how many arrived.

- Training never waits for the tracking server: logging is a write to a local file.
- An outage loses nothing: lines still unsent when the process ends stay here; `emo sync` sends
  them later (`emo.store.sync`), and so does the next `emo fit` that uses the same output folder.
- The record agrees with the checkpoints: a metric point may be sent once a checkpoint covers its
  step (`cover`), so a run resumed from its last checkpoint repeats no point and misses none.
- One process writes a run: the journal holds a lock for its life, which dies with the process.

MLflow's own asynchronous logging (and `MLFlowLogger(synchronous=False)`) keeps its queue in
memory and drops it when its HTTP retries give up or the process ends, hence this journal.
"""

import contextlib
import fcntl
import json
import math
import os
import threading
import time
from pathlib import Path

from emo import UserError
from emo.redact import redact, redact_item, without_userinfo

TEXT_OPS = ("params", "tags")  # their values are text a secret could hide in
JOURNAL, SENT, LOCK = "journal.jsonl", "journal.sent", "journal.lock"


class JournalBusyError(UserError):
    """Another live process writes this run."""


def now_ms() -> int:
    return int(time.time() * 1000)


class Journal:
    """The append-only record of one run on local disk; see the module docstring.

    Entries are dicts with an `op` (`run`, `metrics`, `params`, `tags`, `inputs`, `artifact`, `model`,
    `register`, `status`: the sender's table) and a time `ts`; `metrics` entries carry the training
    `step` they belong to. The first entry (`run`) says which run and store the journal is for.
    """

    def __init__(self, folder: Path, run_id: str, tracking_uri: str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self._lock_file = open(self.folder / LOCK, "w")  # noqa: SIM115 - held for the life of the journal
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the OS if the process dies
        except BlockingIOError:
            raise JournalBusyError(f"run {run_id} is being written by another process ({self.folder})") from None
        self.entries = read_entries(self.folder / JOURNAL)
        self.sent = read_sent(self.folder)
        self.covered_step = -math.inf  # metrics up to this step are covered by a checkpoint
        self.changed = threading.Condition()
        self._file = open(self.folder / JOURNAL, "a", encoding="utf-8")  # noqa: SIM115
        if not self.entries:
            # What `emo sync` needs later: the run, and where to send it without the credentials (they come at sending time).
            self.append("run", run_id=run_id, tracking_uri=redact(without_userinfo(tracking_uri)))

    def append(self, op: str, **fields) -> None:
        if op in TEXT_OPS:
            fields[op] = {key: redact_item(key, value) for key, value in fields[op].items()}
        entry = {"op": op, "ts": now_ms(), **fields}
        with self.changed:
            self.entries.append(entry)
            self._file.write(json.dumps(entry) + "\n")
            self._file.flush()
            self.changed.notify_all()

    def cover(self, step: float) -> None:
        """Metric points up to `step` may be sent: a checkpoint holds the state that produced them."""
        with self.changed:
            self.covered_step = max(self.covered_step, step)
            self.changed.notify_all()

    def sendable(self) -> list[dict]:
        """Unsent entries in order, up to the first metric point that no checkpoint covers yet."""
        with self.changed:
            pending = []
            for entry in self.entries[self.sent :]:
                if entry["op"] == "metrics" and entry["step"] > self.covered_step:
                    break
                pending.append(entry)
            return pending

    @property
    def unsent(self) -> int:
        return len(self.entries) - self.sent

    def mark_sent(self, count: int) -> None:
        with self.changed:
            self.sent += count
            write_atomically(self.folder / SENT, str(self.sent))
            self.changed.notify_all()

    def last_step(self) -> float:
        """The step of the newest metric point written so far."""
        return max((entry["step"] for entry in self.entries if entry["op"] == "metrics"), default=-math.inf)

    def drop_unsent_after(self, step: int) -> int:
        """Forgets unsent metric points past `step` (a resume repeats those steps); returns how many."""
        with self.changed:
            kept = [e for e in self.entries[self.sent :] if not (e["op"] == "metrics" and e["step"] > step)]
            dropped = self.unsent - len(kept)
            if dropped:
                self.entries = self.entries[: self.sent] + kept
                self._file.close()
                write_atomically(self.folder / JOURNAL, "".join(json.dumps(e) + "\n" for e in self.entries))
                self._file = open(self.folder / JOURNAL, "a", encoding="utf-8")  # noqa: SIM115
            return dropped

    def close(self) -> None:
        self._file.close()
        self._lock_file.close()

    @property
    def closed(self) -> bool:
        return self._lock_file.closed


def in_use(folder: Path) -> bool:
    """Whether a live process holds the journal of this run folder (the lock dies with its process)."""
    if not (folder / LOCK).exists():
        return False
    with open(folder / LOCK, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def read_entries(path: Path) -> list[dict]:
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            break  # the last line of a process killed while writing it
    return entries


def read_sent(folder: Path) -> int:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int((folder / SENT).read_text())
    return 0


def last_sent_step(folder: Path) -> int | None:
    """The newest metric step of a run folder's journal that reached the server (read without taking the lock)."""
    entries = read_entries(Path(folder) / JOURNAL)[: read_sent(Path(folder))]
    return max((entry["step"] for entry in entries if entry["op"] == "metrics"), default=None)


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def pending_journals(root: Path) -> list[Path]:
    """Run folders under `root` whose journal holds unsent lines."""
    folders = []
    for path in sorted(Path(root).glob(f"*/*/{JOURNAL}")):
        if len(read_entries(path)) > read_sent(path.parent):
            folders.append(path.parent)
    return folders
