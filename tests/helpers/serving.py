"""`emo serve` for tests: a registered tiny classifier and its ONNX export, the real server on 127.0.0.1, requests,
and a LitServe callback that holds the forward pass until the test lets it go."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from litserve import Callback

from .data import ROOT
from .processes import run_emo
from .server import free_port, wait_for_http

HOLD_FOLDER = "EMO_TEST_HOLD_FOLDER"  # where HoldForward writes `reached-<n>` and waits for `open`


def train_tiny_classifier(model_dir: Path, texts: list[str], labels: list[str], names: list[str]):
    """The tiny BERT with a head for `names`, trained for 40 steps of 15 texts (seeded, the caller's random state left
    as it was): enough to leave the uniform guess, so that its probabilities differ from text to text. In eval mode."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    with torch.random.fork_rng():
        torch.manual_seed(0)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir,
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={label: i for i, label in enumerate(names)},
        )
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
        for step in range(40):
            rows = slice(step * 15 % len(texts), step * 15 % len(texts) + 15)
            batch = tokenizer(texts[rows], truncation=True, max_length=128, padding=True, return_tensors="pt")
            model(**batch, labels=torch.tensor([names.index(label) for label in labels[rows]])).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return model.eval(), tokenizer


def register_tiny_classifier(tracking_uri: str, name: str, model_dir: Path, data_dir: Path) -> None:
    """Version 1 of `name`: the tiny BERT trained for a few steps on the small data, so that its probabilities differ
    from text to text, logged (transformers flavor) and registered as emo registers a fit's model."""
    import mlflow

    from emo.data.fetch import CARER_LABELS
    from emo.store.registry import log_transformers_model, register, tracking_store

    rows = [line.rsplit(";", 1) for line in (data_dir / "train.txt").read_text().splitlines() if line.strip()]
    model, tokenizer = train_tiny_classifier(
        model_dir, [text for text, _ in rows], [label for _, label in rows], CARER_LABELS
    )
    client = mlflow.MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment(f"{name}-test")).info.run_id
    client.log_param(run_id, "data.data_dir", str(data_dir))
    client.log_param(run_id, "data.max_length", 128)
    client.log_metric(run_id, "val/f1_weighted", 0.5)  # what `register` crowns a champion by
    with tracking_store(tracking_uri):
        log_transformers_model(run_id, model, tokenizer)
        register(run_id, name)
    client.set_terminated(run_id)


def export(tracking_uri: str, log: Path, *args: str) -> str:
    """`emo export ARGS` in its own process; its output (it must succeed)."""
    code, output = run_emo(["export", *args], log, env={"MLFLOW_TRACKING_URI": tracking_uri})
    assert code == 0, output
    return output


@contextlib.contextmanager
def serving(model: str, tracking_uri: str, log: Path, *args: str, env: dict | None = None, ready: bool = True):
    """`python -m emo serve --model MODEL ARGS` on a free port of 127.0.0.1, in a process group of its own, once
    `/ping` answers 200 (unless not `ready`): yields its URL and process. The group is killed on leaving."""
    port = free_port()
    paths = os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])  # callbacks from helpers
    settings = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPATH": paths, **(env or {})}
    command = [sys.executable, "-m", "emo", "serve", "--model", model, "--port", str(port), *args]
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=out, env=settings, cwd=log.parent, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        if ready:
            wait_for_http(process, f"{url}/ping", 240, log)
        yield url, process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def post(url: str, payload=None, body: bytes | None = None, timeout_s: float = 120) -> tuple[int, dict]:
    """POST `payload` as JSON (or `body` as it is) to `url`: the status and the JSON answer."""
    data = body if body is not None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


class FailOnFail(Callback):
    """A LitServe callback (`emo serve --callbacks helpers.serving.FailOnFail`): the model raises on any batch that
    holds the text "FAIL", as a model that fails on one request would."""

    def on_after_setup(self, lit_api, **kwargs):
        probabilities = lit_api.classifier.probabilities

        def failing_on_fail(texts, *args, **kwargs):
            if "FAIL" in texts:
                raise RuntimeError("a text the test makes the model fail on")
            return probabilities(texts, *args, **kwargs)

        lit_api.classifier.probabilities = failing_on_fail


class Hold(Callback):
    """Holds the inference worker at an event: it writes `reached-<event>-<n>` into $EMO_TEST_HOLD_FOLDER and waits
    until the test creates `open` there (`open_hold`)."""

    def __init__(self):
        self.folder = Path(os.environ[HOLD_FOLDER])
        self.count = 0

    def hold(self, event: str) -> None:
        self.count += 1
        (self.folder / f"reached-{event}-{self.count}").touch()
        while not (self.folder / "open").exists():
            time.sleep(0.02)


class HoldForward(Hold):
    """Holds every forward pass until the test opens (`--callbacks helpers.serving.HoldForward`)."""

    def on_before_predict(self, lit_api, **kwargs):
        self.hold("forward")


class HoldSetup(Hold):
    """Holds the inference worker before it reports the model loaded, until the test opens
    (`--callbacks helpers.serving.HoldSetup`)."""

    def on_after_setup(self, lit_api, **kwargs):
        self.hold("setup")


def wait_for_hold(folder: Path, event: str, process, timeout_s: float = 240) -> None:
    """Until the inference worker waits at its first `event` (`Hold`)."""
    deadline = time.monotonic() + timeout_s
    while not (folder / f"reached-{event}-1").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the server did not reach {event} (exit status {process.poll()})")
        time.sleep(0.05)


def open_hold(folder: Path) -> None:
    (folder / "open").touch()


def first_to_finish(threads: list, timeout_s: float = 120):
    """The first of `threads` (started) to finish, polled with a deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for thread in threads:
            if not thread.is_alive():
                return thread
        time.sleep(0.02)
    raise TimeoutError(f"none of {len(threads)} requests was answered in {timeout_s} s")


def emo_predict_rows(model: str, tracking_uri: str, texts: list[str], folder: Path) -> list[dict]:
    """`emo predict` of `texts` from `model` (as a user runs it): its CSV rows."""
    import csv

    texts_file, output = folder / "texts.txt", folder / "predictions.csv"
    texts_file.write_text("\n".join(texts) + "\n")
    args = ["predict", "--config", str(ROOT / "configs/base.yaml"), "--config", str(ROOT / "configs/offline.yaml"),
            "--ckpt_path", model, "--data.predict_file", str(texts_file), f"--prediction.output_file={output}"]  # fmt: skip
    code, log = run_emo(args, folder / "predict.log", env={"MLFLOW_TRACKING_URI": tracking_uri})
    assert code == 0, log
    return list(csv.DictReader(open(output, encoding="utf-8")))
