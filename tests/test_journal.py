"""The journal, its sender, liveness and the resume rule, with an in-memory MLflow client: the rules themselves, fast.
(End to end against a real server, through outages and kills: test_outage.py, test_resume.py.)"""

import json
import time

import pytest

from emo.fit.resume import ResumeError, check_run_can_continue, check_settings, differences
from emo.spec import HEARTBEAT_INTERVAL_TAG, HEARTBEAT_TAG
from emo.store import Journal, JournalBusyError, Sender, is_stale, last_sent_step
from emo.store.journal import JOURNAL
from helpers.memory_client import MemoryClient

RUN = "run-1"


@pytest.fixture
def journal(tmp_path):
    journal = Journal(tmp_path / "run", RUN, "memory://")
    yield journal
    journal.close()


def send_all(journal, client, timeout_s=30) -> bool:
    sender = Sender(journal, heartbeat_s=0, client=client)
    sender.start()
    return sender.stop(timeout_s)


def test_a_metric_point_waits_for_the_checkpoint_that_covers_it(journal):
    journal.append("metrics", step=4, metrics={"train/loss": 1.0})
    journal.append("metrics", step=9, metrics={"train/loss": 0.5})
    assert [e["op"] for e in journal.sendable()] == ["run"]
    journal.cover(4)
    assert [e.get("step") for e in journal.sendable()] == [None, 4]
    journal.cover(9)
    assert [e.get("step") for e in journal.sendable()] == [None, 4, 9]


def test_the_sender_delivers_every_line_in_order(journal, tmp_path):
    client = MemoryClient(RUN)
    (journal.folder / "notes.md").write_text("hello")
    journal.append("params", params={"model.learning_rate": "0.0001"})
    journal.append("metrics", step=0, metrics={"train/loss": 2.0})
    journal.append("metrics", step=1, metrics={"train/loss": 1.5, "train/lr": 0.1})
    journal.append("tags", tags={"emo.stage": "fit"})
    journal.append("artifact", local="notes.md", path=None)
    journal.append("status", status="FINISHED")
    assert send_all(journal, client)
    run = client.runs[RUN]
    assert run.params == {"model.learning_rate": "0.0001"} and run.tags["emo.stage"] == "fit"
    assert [(key, value, step) for key, value, _, step in run.metrics] == [
        ("train/loss", 2.0, 0),
        ("train/loss", 1.5, 1),
        ("train/lr", 0.1, 1),
    ]
    assert run.artifacts == [(str(journal.folder / "notes.md"), None)] and run.status == "FINISHED"
    assert journal.unsent == 0 and (journal.folder / "journal.sent").read_text() == str(len(journal.entries))
    assert client.calls == 5  # the two metric lines went in one request


def test_an_outage_loses_nothing_and_ends_when_the_server_answers(journal):
    client = MemoryClient(RUN)
    client.down = True
    journal.append("metrics", step=0, metrics={"val/acc": 0.5})
    sender = Sender(journal, heartbeat_s=0, client=client)
    sender.start()
    assert not sender.flush(timeout_s=1.0)  # the server is away: nothing can arrive
    assert journal.unsent == 1 and client.runs[RUN].metrics == []  # the header needs no request
    client.down = False
    assert sender.stop(timeout_s=30)
    assert [m[:2] for m in client.runs[RUN].metrics] == [("val/acc", 0.5)]


@pytest.mark.parametrize("status", [429, 503])
def test_a_busy_or_failing_server_is_an_outage(journal, status):
    client = MemoryClient(RUN)
    client.refusals = [status, status]
    journal.append("params", params={"p": "1"})
    assert send_all(journal, client) and client.runs[RUN].params == {"p": "1"}


@pytest.mark.parametrize("status", [400, 401, 404])
def test_a_refusal_that_waiting_cannot_fix_stops_the_sender_with_its_cause(journal, status):
    client = MemoryClient(RUN)
    client.refusals = [status]
    journal.append("tags", tags={"bad": "x"})
    journal.append("params", params={"p": "1"})
    sender = Sender(journal, heartbeat_s=0, client=client)
    sender.start()
    assert not sender.stop(timeout_s=30)
    assert sender.failure.startswith("the tags record failed: RestException") and f"HTTP {status}" in sender.failure
    assert journal.unsent == 2 and client.runs[RUN].params == {}  # kept, in order, for emo sync


def test_a_bug_in_sending_is_not_taken_for_an_outage(journal):
    journal.append("artifact", local="gone.md", path=None)  # the file is not there
    sender = Sender(journal, heartbeat_s=0, client=MemoryClient(RUN))
    sender.start()
    assert not sender.stop(timeout_s=30) and "FileNotFoundError" in sender.failure


def test_what_a_killed_process_did_not_send_is_there_for_the_next_one(tmp_path):
    first = Journal(tmp_path / "run", RUN, "memory://")
    first.append("metrics", step=0, metrics={"a": 1.0})
    first.append("metrics", step=5, metrics={"a": 2.0})
    first.cover(0)
    first.mark_sent(2)  # the header and the first point arrived
    with pytest.raises(JournalBusyError):
        Journal(tmp_path / "run", RUN, "memory://")  # one process writes a run
    first._file.write('{"op": "metrics", "st')  # killed in the middle of a line
    first._file.flush()
    first.close()
    second = Journal(tmp_path / "run", RUN, "memory://")
    assert second.unsent == 1 and second.entries[-1]["step"] == 5
    assert last_sent_step(tmp_path / "run") == 0
    assert second.drop_unsent_after(3) == 1 and second.unsent == 0  # a resume from step 4 repeats step 5
    assert [json.loads(line)["op"] for line in (tmp_path / "run" / JOURNAL).read_text().splitlines()] == [
        "run",
        "metrics",
    ]
    second.close()


def test_a_run_silent_for_five_of_its_intervals_is_stale():
    now = 1_000_000.0
    assert not is_stale({}, now)  # never beat: not an emo run, or not started
    assert not is_stale({HEARTBEAT_TAG: str(now - 299), HEARTBEAT_INTERVAL_TAG: "60"}, now)
    assert is_stale({HEARTBEAT_TAG: str(now - 301), HEARTBEAT_INTERVAL_TAG: "60"}, now)
    assert is_stale({HEARTBEAT_TAG: str(now - 51), HEARTBEAT_INTERVAL_TAG: "10"}, now)


def test_watching_settings_may_change_on_resume_and_others_may_not():
    recorded = {"model.learning_rate": "0.0001", "trainer.max_epochs": "3", "trainer.enable_progress_bar": "True"}
    watched = {**recorded, "trainer.enable_progress_bar": "False", "data.num_workers": "2"}
    assert differences(recorded, watched) == []
    learning = {**recorded, "model.learning_rate": "0.001"}
    assert differences(recorded, learning) == ["model.learning_rate 0.0001 -> 0.001"]
    longer = {**recorded, "trainer.max_epochs": "5"}
    with pytest.raises(ResumeError, match="--resume_new_run true"):
        check_settings("last.ckpt", {"run_id": RUN, "params": recorded}, longer, new_run=False)
    check_settings("last.ckpt", {"run_id": RUN, "params": recorded}, longer, new_run=True)  # a new run may train longer
    with pytest.raises(ResumeError, match="only"):
        check_settings("last.ckpt", {"run_id": RUN, "params": recorded}, learning, new_run=True)


def record(step: int) -> dict:
    return {"run_id": RUN, "experiment_id": "1", "step": step, "params": {}}


def test_a_run_continues_only_when_nothing_else_writes_it_and_it_recorded_nothing_past_the_checkpoint(tmp_path):
    folder, client = tmp_path / "1" / RUN, MemoryClient(RUN)
    check_run_can_continue(record(10), folder, client)  # killed here, nothing recorded: it continues

    client.runs[RUN].status = "FINISHED"
    with pytest.raises(ResumeError, match="has finished"):
        check_run_can_continue(record(10), folder, client)
    client.runs[RUN].status = "RUNNING"

    with pytest.raises(ResumeError, match="not in memory://"):
        check_run_can_continue({**record(10), "run_id": "elsewhere"}, folder, client)

    client.runs[RUN].tags.update({HEARTBEAT_TAG: str(time.time()), HEARTBEAT_INTERVAL_TAG: "60"})
    with pytest.raises(ResumeError, match="still running elsewhere"):  # its journal is not here and it beats
        check_run_can_continue(record(10), folder, client)
    client.runs[RUN].tags[HEARTBEAT_TAG] = str(time.time() - 600)
    check_run_can_continue(record(10), folder, client)  # silent for ten minutes: its process died

    journal = Journal(folder, RUN, "memory://")
    with pytest.raises(ResumeError, match="still running: a process on this machine"):
        check_run_can_continue(record(10), folder, client)
    journal.append("metrics", step=12, metrics={"a": 1.0})
    journal.mark_sent(2)
    journal.close()
    with pytest.raises(ResumeError, match="already recorded steps up to 12, past this checkpoint"):
        check_run_can_continue(record(10), folder, client)
    check_run_can_continue(record(13), folder, client)


def test_a_journal_keeps_where_to_send_without_the_credentials(tmp_path, monkeypatch):
    from emo.store.sync import sending_uri

    journal = Journal(tmp_path / "run", RUN, "http://researcher:pw-123@127.0.0.1:5000")
    assert journal.entries[0]["tracking_uri"] == "http://127.0.0.1:5000" and journal.tracking_uri.endswith(
        "pw-123@127.0.0.1:5000"
    )
    journal.close()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert (
        sending_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    )  # credentials from MLFLOW_TRACKING_USERNAME/_PASSWORD
    assert sending_uri("http://***@127.0.0.1:5000") == "http://127.0.0.1:5000"  # a journal of an earlier version
    given = "http://researcher:pw-123@127.0.0.1:5000"
    assert sending_uri("http://127.0.0.1:5000", given) == given
    assert sending_uri("http://127.0.0.1:5000", "http://other:1@elsewhere:5000") == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", given)
    assert sending_uri("http://127.0.0.1:5000") == given
