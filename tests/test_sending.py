"""Sending a journal to a real MLflow server: twice is harmless, and what a process left unsent goes with the next fit.
(The rules with an in-memory client: test_journal.py; outages: test_outage.py; a refusal mid-run: below; at start: test_security.py.)"""

import mlflow
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from emo.store import Journal, Sender, pending_journals
from emo.store.journal import SENT, read_entries
from helpers.data import one_epoch_named, shrunk_args
from helpers.gates import gate_callback, open_gate, wait_for_reached
from helpers.processes import run_emo, start_emo


def new_run(client, experiment: str) -> str:
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    return client.create_run(experiment_id).info.run_id


def send(journal: Journal) -> bool:
    sender = Sender(journal, heartbeat_s=0)
    sender.start()
    return sender.stop(timeout_s=300)


def test_records_sent_twice_give_one_metric_history_and_one_model_version(tmp_path, tiny_model_dir, tracking_uri):
    """A process killed after sending but before noting it (journal.sent) sends it all again: nothing doubles."""
    client, name = mlflow.MlflowClient(), "sent-twice-test"
    run_id = new_run(client, name)
    folder = tmp_path / "outputs" / "1" / run_id
    journal = Journal(folder, run_id, tracking_uri)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=6)
    model.save_pretrained(folder / "model")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder / "model")
    for step in range(3):
        journal.append("metrics", step=step, metrics={"train/loss": 1.0 / (step + 1)})
    journal.append("params", params={"optimizer.init_args.lr": "0.0001"})
    journal.append("metrics", step=3, metrics={"val/f1_weighted": 0.5})
    journal.append("model", local="model")
    journal.append("register", name=name, alias="champion", metric="val/f1_weighted")
    journal.append("status", status="FINISHED")
    journal.cover(3)
    assert send(journal)
    journal.close()

    (folder / SENT).unlink()  # as if the process died before it noted what arrived
    again = Journal(folder, run_id, tracking_uri)
    assert again.unsent == len(read_entries(folder / "journal.jsonl"))
    again.cover(3)
    assert send(again)
    again.close()

    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [0, 1, 2]
    [version] = client.search_model_versions(f"name='{name}'")
    assert version.run_id == run_id and client.get_model_version_by_alias(name, "champion").version == version.version
    assert client.get_run(run_id).info.status == "FINISHED"


def test_the_next_fit_sends_a_journal_left_behind(tmp_path, tiny_model_dir, small_data_dir, tracking_uri):
    """Records an earlier process could not send (its server was away) go with the next `emo fit` of the same folder."""
    client = mlflow.MlflowClient()
    earlier = new_run(client, "left-behind-earlier")
    journal = Journal(tmp_path / "outputs" / "1" / earlier, earlier, tracking_uri)
    journal.append("metrics", step=0, metrics={"val/f1_weighted": 0.25})
    journal.append("tags", tags={"note": "left behind"})
    journal.append("status", status="FINISHED")
    journal.close()  # the process ended with nothing sent
    assert pending_journals(tmp_path / "outputs") == [journal.folder]

    args = [
        "fit",
        *shrunk_args(
            tmp_path,
            tiny_model_dir,
            small_data_dir,
            *one_epoch_named("left-behind-next"),
        ),
    ]
    code, output = run_emo(args, tmp_path / "fit.log")
    assert code == 0, output[-3000:]
    run = client.get_run(earlier)
    assert run.info.status == "FINISHED" and run.data.tags["note"] == "left behind"
    assert [(m.step, m.value) for m in client.get_metric_history(earlier, "val/f1_weighted")] == [(0, 0.25)]
    assert pending_journals(tmp_path / "outputs") == []


def test_a_refusal_that_is_not_an_outage_fails_the_fit_with_its_cause_and_keeps_the_journal(
    tmp_path, tiny_model_dir, small_data_dir, tracking_uri
):
    """The server answers but refuses (the run was deleted meanwhile): no waiting it out, the fit fails in one line
    naming the cause and where the records are kept for `emo sync`."""
    name = "refused-test"
    args = ["fit", *shrunk_args(tmp_path, tiny_model_dir, small_data_dir, "--trainer.max_epochs", "1",
                                "--trainer.log_every_n_steps", "1",
                                "--trainer.logger.init_args.experiment_name", name,
                                "--registry.registered_model_name", name,
                                *gate_callback(tmp_path / "deleted", at_step=3))]  # fmt: skip
    process = start_emo(args, tmp_path / "fit.log")
    wait_for_reached(tmp_path / "deleted", processes=1, watch=(process,))
    client = mlflow.MlflowClient()
    [run] = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    client.delete_run(run.info.run_id)  # what the server refuses from now on: records of a deleted run
    open_gate(tmp_path / "deleted")
    code = process.wait(timeout=600)
    output = (tmp_path / "fit.log").read_text()
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 1 and "Traceback" not in output, output[-3000:]
    assert lines[-1].startswith(f"emo: error: run {run.info.run_id}: "), output[-3000:]
    assert "records are kept in" in lines[-1] and "for `emo sync` once that is fixed" in lines[-1], lines[-1]
    [folder] = pending_journals(tmp_path / "outputs")  # the journal stays, with what was not sent
    assert folder.name == run.info.run_id
