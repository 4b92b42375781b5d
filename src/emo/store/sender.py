"""Sends a run's journal to MLflow in order, retrying while the server is away, and beats the run's heartbeat.

Each journal op has one entry in `OPS`: how its lines reach MLflow. Consecutive metrics, params
or tags go in one request (MLflow's `log_batch`, within its limits per call).

Sending twice is harmless: MLflow's SQL stores drop an exact repeat of a metric point (same key,
step, value and timestamp, which the journal keeps); params and tags are set to the same values;
the model and its registration check whether they happened already.
"""

import contextlib
import dataclasses
import itertools
import math
import threading
import time
from collections.abc import Callable

import mlflow
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

from emo.redact import redact, without_userinfo
from emo.spec import HEARTBEAT_TAG
from emo.store.experiment import run_url
from emo.store.journal import Journal
from emo.store.outage import described, is_outage
from emo.store.registry import register_once, send_model


def metric_items(batch: list[dict]) -> list[Metric]:
    return [
        Metric(key, value, entry["ts"], entry["step"]) for entry in batch for key, value in entry["metrics"].items()
    ]


def param_items(batch: list[dict]) -> list[Param]:
    return [Param(key, value) for entry in batch for key, value in entry["params"].items()]


def tag_items(batch: list[dict]) -> list[RunTag]:
    return [RunTag(key, value) for entry in batch for key, value in entry["tags"].items()]


def dataset_input(fields: dict) -> DatasetInput:
    dataset = {key: value for key, value in fields.items() if key != "tags"}
    return DatasetInput(
        Dataset(**dataset), tags=[InputTag(key, value) for key, value in fields.get("tags", {}).items()]
    )


@dataclasses.dataclass(frozen=True)
class Op:
    """How the lines of one journal op reach MLflow: `send(client, journal, lines)`.

    `batch`: that many items fit one request, and consecutive lines of the op go together (0: one line a call).
    """

    send: Callable[[object, Journal, list[dict]], None]
    batch: int = 0


def log_batch(kind: str, items: Callable[[list[dict]], list], limit: int) -> Op:
    def send(client, journal: Journal, lines: list[dict]) -> None:
        every = items(lines)
        for start in range(0, len(every), limit):
            client.log_batch(journal.run_id, **{kind: every[start : start + limit]})

    return Op(send, batch=limit)


def send_inputs(client, journal: Journal, lines: list[dict]) -> None:
    client.log_inputs(journal.run_id, datasets=[dataset_input(fields) for fields in lines[0]["datasets"]])


def send_artifact(client, journal: Journal, lines: list[dict]) -> None:
    client.log_artifact(journal.run_id, str(journal.folder / lines[0]["local"]), lines[0].get("path"))


def send_status(client, journal: Journal, lines: list[dict]) -> None:
    client.set_terminated(journal.run_id, lines[0]["status"], end_time=lines[0]["ts"])
    show_run_link(client, journal.run_id)


def show_run_link(client, run_id: str) -> None:
    """The run's page, as MLflow prints it when a run ends on a server, without the credentials: MLflow's own line
    shows the tracking URI as given, password and all (`emo.store.uri.use_mlflow_defaults` turns that one off)."""
    if not str(client.tracking_uri).startswith(("http://", "https://")):
        return
    with contextlib.suppress(Exception):  # a link is no record: never a reason to stop sending
        run = client.get_run(run_id)
        base = redact(without_userinfo(client.tracking_uri))
        print(
            f"emo: run {redact(run.info.run_name or run_id)}: {run_url(base, run.info.experiment_id, run_id)}",
            flush=True,
        )


def send_model_line(client, journal: Journal, lines: list[dict]) -> None:
    send_model(client, journal.run_id, journal.folder / lines[0]["local"])


def send_registration_line(client, journal: Journal, lines: list[dict]) -> None:
    line = lines[0]
    register_once(client, journal.run_id, line["name"], line["alias"], line["metric"])


OPS = {
    "run": Op(lambda client, journal, lines: None),  # the journal's header: nothing to send
    "metrics": log_batch("metrics", metric_items, 1000),  # MLflow's limits for one log_batch call
    "params": log_batch("params", param_items, 100),
    "tags": log_batch("tags", tag_items, 100),
    "inputs": Op(send_inputs),
    "artifact": Op(send_artifact),
    "status": Op(send_status),
    "model": Op(send_model_line),
    "register": Op(send_registration_line),
}


class Sender(threading.Thread):
    """Sends a journal's entries in order, retrying for as long as the store is away; beats the run's heartbeat.

    Only an outage is retried (`emo.store.outage`). Anything else stops the sender with its cause in
    `failure`: the line and those after it stay in the journal, for `emo sync` once the cause is fixed.
    `client`: the MLflow client to send through (default: one for the journal's tracking URI).
    """

    def __init__(self, journal: Journal, heartbeat_s: float = 60, client=None):
        super().__init__(name=f"emo-sender-{journal.run_id[:8]}", daemon=True)
        self.journal = journal
        self.client = client or mlflow.MlflowClient(journal.tracking_uri)
        self.heartbeat_s = heartbeat_s
        self.stopping = False
        self.failing_since: float | None = None  # monotonic time of the first failure of the current outage
        self.last_beat = -math.inf
        self.failure: str | None = None  # why sending stopped, when it was not an outage

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
                if not is_outage(error):  # waiting would not help: stop, with the cause
                    with self.journal.changed:
                        self.failure = f"the {pending[0]['op']} record failed: {described(error)}"
                        self.journal.changed.notify_all()
                    return
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
        """Sends the first entry, with the entries of the same op after it when the op batches; returns how many."""
        op = OPS[pending[0]["op"]]
        lines = (
            list(itertools.takewhile(lambda entry: entry["op"] == pending[0]["op"], pending))
            if op.batch
            else pending[:1]
        )
        op.send(self.client, self.journal, lines)
        if pending[0]["op"] == "status":
            self.heartbeat_s = 0  # the run has ended: no more beats
        return len(lines)

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
