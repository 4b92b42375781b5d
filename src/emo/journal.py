"""A run's record, written to local disk first and sent to MLflow by a background thread.

Every metric, param, tag, artifact, model, registration and status change of a run becomes a
line of `<run folder>/journal.jsonl` (the run folder is `<default_root_dir>/<experiment id>/<run id>`,
beside `checkpoints/`) before anything goes over the network; a `Sender` thread then sends the
lines in order and notes in `journal.sent` how many have arrived.

- Training never waits for the tracking server: logging is a write to a local file.
- An outage loses nothing: the sender retries until the server answers again. Lines that are
  still unsent when the process ends stay in the journal; `emo sync` sends them later, and so
  does the next `emo fit` that uses the same output folder.
- The record agrees with the checkpoints: a metric point is sent once a checkpoint covers its
  step, so a run resumed from its last checkpoint (`--ckpt_path last`) repeats no point and
  misses none (see `emo.resume`).
- Sending twice is harmless: MLflow's SQL stores drop an exact repeat of a metric point (same
  key, step, value and timestamp, which the journal keeps); params and tags are set to the same
  values; the model and its registration check whether they happened already.
- A run that died shows it: while the process lives, the sender sets the tag `emo.heartbeat`
  (Unix seconds) every `heartbeat_s`; `mark_stale_runs` ends RUNNING runs whose heartbeat is
  older than five intervals as KILLED. `emo fit` and `emo sweep` call it when they start.

MLflow's own asynchronous logging (and `MLFlowLogger(synchronous=False)`) keeps its queue in
memory and drops it when its HTTP retries give up or the process ends, hence this journal.
"""

import contextlib
import fcntl
import itertools
import json
import math
import os
import sys
import threading
import time
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from emo import UserError
from emo.redact import redact

TEXT_OPS = ("params", "tags")  # their values are text a secret could hide in

JOURNAL, SENT, LOCK = "journal.jsonl", "journal.sent", "journal.lock"
HEARTBEAT_TAG = "emo.heartbeat"
HEARTBEAT_INTERVAL_TAG = "emo.heartbeat_interval_s"
STALE_AFTER_BEATS = 5
BATCH_LIMITS = {"metrics": 1000, "params": 100, "tags": 100}  # MLflow's limits for one log_batch call


class JournalBusyError(UserError):
    """Another live process writes this run."""


def now_ms() -> int:
    return int(time.time() * 1000)


class Journal:
    """The append-only record of one run on local disk; see the module docstring.

    Entries are dicts with an `op` (`metrics`, `params`, `tags`, `inputs`, `artifact`, `model`,
    `register`, `status`); `metrics` entries carry the training `step` they belong to.
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
            self.append("run", run_id=run_id, tracking_uri=redact(tracking_uri))  # what `emo sync` needs later

    def append(self, op: str, **fields) -> None:
        if op in TEXT_OPS:
            fields[op] = {key: redact(str(value)) for key, value in fields[op].items()}
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

    def last_sent_step(self) -> int | None:
        steps = [entry["step"] for entry in self.entries[: self.sent] if entry["op"] == "metrics"]
        return max(steps, default=None)

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


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def is_permanent(error: Exception) -> bool:
    """A record that sending again cannot help (refused for its content, or its file is gone), not a failed delivery."""
    if isinstance(error, FileNotFoundError):
        return True
    status = error.get_http_status_code() if isinstance(error, MlflowException) else None
    return status is not None and 400 <= status < 500 and status not in (401, 403, 408, 429)


class Sender(threading.Thread):
    """Sends a journal's entries in order, retrying while the server is away; beats the run's heartbeat."""

    def __init__(self, journal: Journal, heartbeat_s: float = 60):
        super().__init__(name=f"emo-sender-{journal.run_id[:8]}", daemon=True)
        self.journal = journal
        self.client = mlflow.MlflowClient(journal.tracking_uri)
        self.heartbeat_s = heartbeat_s
        self.stopping = False
        self.failing_since: float | None = None  # monotonic time of the first failure of the current outage
        self.last_beat = -math.inf
        self.refused: list[str] = []

    def run(self) -> None:
        delay = 1.0
        while True:
            self.beat()
            pending = self.journal.sendable()
            if not pending:
                if self.stopping:
                    return
                with self.journal.changed:  # woken by a new line, a cover, a stop, or the next heartbeat
                    if not self.journal.sendable() and not self.stopping:
                        self.journal.changed.wait(timeout=min(self.heartbeat_s or 5, 5))
                continue
            try:
                self.journal.mark_sent(self.send(pending))
                self.failing_since, delay = None, 1.0
            except Exception as error:
                if is_permanent(error):  # refused for its content: report it, keep the rest flowing
                    self.refused.append(f"{pending[0]['op']}: {str(error).splitlines()[0][:200]}")
                    self.journal.mark_sent(1)
                    continue
                self.failing_since = self.failing_since or time.monotonic()
                with self.journal.changed:
                    self.journal.changed.wait(timeout=delay)
                delay = min(delay * 2, 10.0)

    def beat(self) -> None:
        if not self.heartbeat_s or time.monotonic() - self.last_beat < self.heartbeat_s:
            return
        with contextlib.suppress(Exception):  # a missed beat is no loss; an outage shows in send()
            self.client.set_tag(self.journal.run_id, HEARTBEAT_TAG, str(int(time.time())))
            self.last_beat = time.monotonic()

    def send(self, pending: list[dict]) -> int:
        """Sends the first entry, with the entries of the same kind after it that fit one request."""
        op, entry = pending[0]["op"], pending[0]
        run_id, folder = self.journal.run_id, self.journal.folder
        if op in BATCH_LIMITS:
            batch = list(itertools.takewhile(lambda e: e["op"] == op, pending))
            self.send_batch(op, batch)
            return len(batch)
        if op == "inputs":
            self.client.log_inputs(run_id, datasets=[dataset_input(fields) for fields in entry["datasets"]])
        elif op == "artifact":
            self.client.log_artifact(run_id, str(folder / entry["local"]), entry.get("path"))
        elif op == "status":
            self.client.set_terminated(run_id, entry["status"], end_time=entry["ts"])
            self.heartbeat_s = 0  # ended: no more beats
        elif op == "model":
            from emo.registry import send_model  # transformers and the flavour load only when a model is sent

            send_model(run_id, folder / entry["local"])
        elif op == "register":
            from emo.registry import send_registration

            send_registration(run_id, entry["name"], entry["alias"], entry["metric"])
        return 1  # "run" (the journal's header) needs no request

    def send_batch(self, op: str, batch: list[dict]) -> None:
        if op == "metrics":
            items = [Metric(k, v, e["ts"], e["step"]) for e in batch for k, v in e["metrics"].items()]
        elif op == "params":
            items = [Param(k, v) for e in batch for k, v in e["params"].items()]
        else:
            items = [RunTag(k, v) for e in batch for k, v in e["tags"].items()]
        limit = BATCH_LIMITS[op]
        for start in range(0, len(items), limit):
            self.client.log_batch(self.journal.run_id, **{op: items[start : start + limit]})

    def flush(self, timeout_s: float, everything: bool = True) -> bool:
        """Waits up to `timeout_s` for the lines to arrive (with `everything`, covered or not); True when they did."""
        if everything:
            self.journal.cover(math.inf)
        deadline = time.monotonic() + timeout_s
        with self.journal.changed:
            while self.journal.sendable() and self.is_alive() and (remaining := deadline - time.monotonic()) > 0:
                self.journal.changed.wait(timeout=remaining)
        return not self.journal.sendable()

    def stop(self, timeout_s: float) -> bool:
        """Flushes, then ends the thread (it is a daemon: an unfinished send dies with the process)."""
        done = self.flush(timeout_s)
        with self.journal.changed:
            self.stopping = True
            self.journal.changed.notify_all()
        if done:
            self.join(timeout=5)
        return done


def dataset_input(fields: dict):
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = {k: v for k, v in fields.items() if k != "tags"}
    return DatasetInput(Dataset(**dataset), tags=[InputTag(k, v) for k, v in fields.get("tags", {}).items()])


def mark_stale_runs(client, experiment_id: str) -> list[str]:
    """Ends RUNNING runs of `experiment_id` whose heartbeat stopped (their process died) as KILLED."""
    stale = []
    now = time.time()
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        if HEARTBEAT_TAG not in tags:
            continue  # not an emo run, or one that has not beaten yet
        interval = float(tags.get(HEARTBEAT_INTERVAL_TAG, 60))
        silent_s = now - float(tags[HEARTBEAT_TAG])
        if silent_s > STALE_AFTER_BEATS * interval:
            client.set_tag(run.info.run_id, "emo.ended_by", f"no heartbeat for {silent_s:.0f} s: its process died")
            client.set_terminated(run.info.run_id, "KILLED")
            stale.append(run.info.run_id)
    return stale


def pending_journals(root: Path) -> list[Path]:
    """Run folders under `root` whose journal holds unsent lines."""
    folders = []
    for path in sorted(Path(root).glob(f"*/*/{JOURNAL}")):
        if len(read_entries(path)) > read_sent(path.parent):
            folders.append(path.parent)
    return folders


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


def main(args=None) -> None:
    from jsonargparse import auto_cli

    def send(root: str = "outputs", timeout_s: float = 300) -> None:
        """Send the records that a tracking outage kept in the run folders under `root`.

        Args:
            root: The trainer's default_root_dir of the runs (their journals are in <root>/<experiment>/<run>/).
            timeout_s: Give up on a run whose server does not take its records in this time.
        """
        if not sync(Path(root), timeout_s):
            raise SystemExit("emo: error: some records could not be sent; they stay in their journals")

    auto_cli(send, args=args)
