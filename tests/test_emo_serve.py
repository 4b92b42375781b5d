"""`emo serve`: the real server (LitServe) on 127.0.0.1 serving a registered ONNX export and a torch version, with
MLflow's scoring protocol; concurrent clients, bad requests, a full queue and SIGTERM. Load here is bounded in count
and time, and no test asserts a timing."""

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from emo.data.fetch import CARER_LABELS
from helpers.processes import run_emo
from helpers.server import wait_for_http
from helpers.serving import (
    HOLD_FOLDER,
    emo_predict_rows,
    export,
    first_to_finish,
    open_hold,
    post,
    register_tiny_classifier,
    serving,
    wait_for_hold,
)

NAME = "emotion-emo-serve-test"
EXPORT = f"models:/{NAME}-onnx/1"
TEXTS = ["i feel so happy and loved", "this makes me furious", "i am scared of the dark", "what a surprise to see you"]
KEYS = ["label", "score", *(f"p_{label}" for label in CARER_LABELS)]


@pytest.fixture(scope="module")
def exported(tiny_model_dir, small_data_dir, mlflow_server, tmp_path_factory) -> str:
    """Version 1 of NAME (a tiny trained BERT, champion) and its fp32 ONNX export, version 1 of NAME-onnx."""
    register_tiny_classifier(mlflow_server, NAME, tiny_model_dir, small_data_dir)
    log = tmp_path_factory.mktemp("export") / "export.log"
    output = export(mlflow_server, log, "--model", f"models:/{NAME}@champion", "--quantize", "none")
    assert f"Registered '{NAME}-onnx' version 1" in output, output
    return EXPORT


@pytest.fixture(scope="module")
def server(exported, mlflow_server, tmp_path_factory):
    """`emo serve` of the champion, shared by the tests that do not stop it: its ONNX export serves."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serving(f"models:/{NAME}@champion", mlflow_server, log) as (url, process):
        yield url, process, log


def assert_same_answers(rows: list[dict], expected: list[dict], tolerance: float = 1e-6) -> None:
    """The same labels, and probabilities equal but for rounding (a batch's padding moves the last digits)."""
    assert [row["label"] for row in rows] == [row["label"] for row in expected]
    numbers = KEYS[1:]
    assert [row[key] for row in rows for key in numbers] == pytest.approx(
        [row[key] for row in expected for key in numbers], abs=tolerance
    )


def rows_of(status_and_body) -> list[dict]:
    status, body = status_and_body
    assert status == 200, body
    return body["predictions"]


def test_the_export_answers_mlflow_s_request_formats_with_every_class(server):
    url, _, log = server
    invocations = f"{url}/invocations"
    rows = rows_of(post(invocations, {"inputs": TEXTS}))
    assert [list(row) for row in rows] == [KEYS] * len(TEXTS)
    for row in rows:
        probabilities = [row[f"p_{label}"] for label in CARER_LABELS]
        assert row["label"] == CARER_LABELS[probabilities.index(max(probabilities))]
        assert row["score"] == max(probabilities) and sum(probabilities) == pytest.approx(1, abs=1e-6)
    assert len({row["label"] for row in rows}) > 1 or len({row["score"] for row in rows}) > 1  # not one constant
    for payload in (
        {"instances": TEXTS},
        {"dataframe_split": {"columns": ["text"], "data": [[text] for text in TEXTS]}},
        {"dataframe_records": [{"text": text} for text in TEXTS]},
    ):
        assert_same_answers(rows_of(post(invocations, payload)), rows)
    assert_same_answers(rows_of(post(invocations, {"inputs": TEXTS[1]})), rows[1:2])  # one text as a string


def test_the_champion_is_served_by_its_export_and_version_names_it(server):
    url, process, log = server
    with urllib.request.urlopen(f"{url}/ping", timeout=30) as response:
        assert response.status == 200
    with urllib.request.urlopen(f"{url}/version", timeout=30) as response:
        about = json.loads(response.read())
    assert about["model"] == EXPORT and about["given"] == f"models:/{NAME}@champion" and about["kind"] == "onnx"
    lines = log.read_text()
    assert f"models:/{NAME}@champion is models:/{NAME}/1; served by its newest ONNX export, {EXPORT}" in lines
    tree = [process.pid, *(child.pid for child in psutil.Process(process.pid).children(recursive=True))]
    maps = "".join(Path(f"/proc/{pid}/maps").read_text() for pid in tree)
    assert "libtorch" not in maps and "onnxruntime" in maps  # the server's processes run onnxruntime, not torch
    assert f"emo serve: serving {EXPORT} (models:/{NAME}@champion at start: restart to follow the alias)" in lines


def test_a_torch_version_serves_what_its_export_serves(server, mlflow_server, tmp_path):
    expected = rows_of(post(f"{server[0]}/invocations", {"inputs": TEXTS}))
    with serving(f"models:/{NAME}/1", mlflow_server, tmp_path / "serve.log", "--runtime", "torch") as (url, _):
        with urllib.request.urlopen(f"{url}/version", timeout=30) as response:
            assert json.loads(response.read())["kind"] == "torch"
        assert_same_answers(rows_of(post(f"{url}/invocations", {"inputs": TEXTS})), expected, tolerance=1e-4)


@pytest.mark.parametrize(
    ("args", "status", "expected"),
    [
        (["--model", "0123456789abcdef0123456789abcdef"], 2, "name a registered model as models:/NAME@ALIAS"),
        (["--model", f"models:/{NAME}/7"], 1, f"registered model '{NAME}' has no version 7 (latest: 1)"),
        (["--model", EXPORT, "--port", "80"], 2, "--port 80: choose a port from 1024 to 65535"),
        (["--model", EXPORT, "--batch_wait_ms", "0"], 2, "--batch_wait_ms 0.0: choose more than 0 and less than"),
        (["--model", EXPORT, "--runtime", "torch"], 2, "an ONNX export; serve its source with --runtime torch"),
        (
            ["--model", EXPORT, "--host", "localhost"],
            2,
            "--host: Expected a typing.Literal['127.0.0.1', '0.0.0.0', '::']. Got value: localhost",
        ),
    ],
    ids=["a-run-id", "a-missing-version", "a-low-port", "no-wait", "an-export-on-torch", "a-host-name"],
)
def test_a_bad_serve_command_is_one_line(args, status, expected, exported, mlflow_server, tmp_path):
    code, output = run_emo(["serve", *args], tmp_path / "serve.log", env={"MLFLOW_TRACKING_URI": mlflow_server})
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == status and len(lines) == 1, output
    assert lines[0].startswith("emo: error: ") and expected in lines[0], lines


def test_concurrent_clients_get_the_answers_of_one_client_and_of_emo_predict(
    server, mlflow_server, small_data_dir, tmp_path
):
    url, _, _ = server
    invocations = f"{url}/invocations"
    texts = [line.rsplit(";", 1)[0] for line in (small_data_dir / "test.txt").read_text().splitlines()][:40]
    alone = [rows_of(post(invocations, {"inputs": [text]}))[0] for text in texts]
    answers: dict = {}

    def client(number: int) -> None:  # 8 clients, each 5 single texts and 1 request of 8 texts: 48 requests
        mine = texts[number * 5 : number * 5 + 5]
        answers[number, "singles"] = [post(invocations, {"inputs": [text]}) for text in mine]
        answers[number, "batch"] = post(invocations, {"inputs": texts[number::5][:8]})

    clients = [threading.Thread(target=client, args=(number,)) for number in range(8)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(timeout=300)
    for number in range(8):
        assert_same_answers([rows_of(answer)[0] for answer in answers[number, "singles"]], alone[number * 5 :][:5])
        assert_same_answers(rows_of(answers[number, "batch"]), alone[number::5][:8])
    predicted = emo_predict_rows(EXPORT, mlflow_server, texts, tmp_path)
    assert [row["label"] for row in predicted] == [row["label"] for row in alone]
    for row, served in zip(predicted, alone, strict=True):
        assert [float(row[f"p_{label}"]) for label in CARER_LABELS] == pytest.approx(
            [served[f"p_{label}"] for label in CARER_LABELS], abs=1e-5
        )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"i am not json", "the body is not JSON"),
        (b"[]", "expected a JSON object with one of inputs"),
        (b"{}", "expected exactly one of inputs, instances, dataframe_split, dataframe_records"),
        (b'{"texts": ["a"]}', "expected exactly one of inputs"),
        (b'{"inputs": ["a"], "instances": ["b"]}', "expected exactly one of inputs"),
        (b'{"inputs": []}', "no texts: send at least one"),
        (b'{"inputs": null}', "input 0 is null, not a text"),
        (b'{"inputs": ["a", null]}', "input 1 is null, not a text"),
        (b'{"inputs": ["a", 3]}', "input 1 is int 3, not a text"),
        (b'{"inputs": 3}', "inputs: expected a list of texts, got int"),
        (b'{"dataframe_split": {"columns": ["a", "b"], "data": [["x", "y"]]}}', "expected one column of texts"),
        (json.dumps({"inputs": ["a" * 10_001]}).encode(), "input 0 has 10001 characters, more than the 10000"),
        (json.dumps({"inputs": ["a"] * 257}).encode(), "257 texts in one request, more than 256"),
    ],
    ids=["not-json", "not-an-object", "no-field", "unknown-field", "two-fields", "empty-list", "null", "null-in-a-list",
         "a-number", "not-a-list", "two-columns", "a-text-too-long", "too-many-texts"],
)  # fmt: skip
def test_a_bad_request_is_a_400_with_a_message_and_the_server_goes_on(body, expected, server):
    url, process, _ = server
    status, answer = post(f"{url}/invocations", body=body)
    assert status == 400 and answer["error_code"] == "BAD_REQUEST" and expected in answer["message"], answer
    assert len(rows_of(post(f"{url}/invocations", {"inputs": TEXTS}))) == len(TEXTS)
    assert process.poll() is None


def test_a_text_over_the_model_s_length_is_read_up_to_it(server):
    url, _, _ = server
    start = " ".join(TEXTS * 8)  # 200 tokens: over the model's 128
    ends = (" i feel so lonely and sad tonight", " what a wonderful surprise party for me")
    first, second = rows_of(post(f"{url}/invocations", {"inputs": [start + end for end in ends]}))
    assert_same_answers([first], [second])  # both read as their first 128 tokens: their ends are not read


def hold_env(tmp_path):
    hold = tmp_path / "hold"
    hold.mkdir()
    return hold, {HOLD_FOLDER: str(hold)}


def test_ping_answers_503_or_nothing_until_the_model_is_loaded(exported, mlflow_server, tmp_path):
    hold, env = hold_env(tmp_path)
    args = ["--callbacks", "[helpers.serving.HoldSetup]"]
    with serving(exported, mlflow_server, tmp_path / "serve.log", *args, env=env, ready=False) as (url, process):
        wait_for_hold(hold, "setup", process)  # the inference worker is about to load the model
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # 503, or no connection yet
            urllib.request.urlopen(f"{url}/ping", timeout=10).close()
        open_hold(hold)
        wait_for_http(process, f"{url}/ping", 240, tmp_path / "serve.log")
        assert len(rows_of(post(f"{url}/invocations", {"inputs": TEXTS}))) == len(TEXTS)


def test_sigterm_while_the_model_loads_stops_at_once(exported, mlflow_server, tmp_path):
    hold, env = hold_env(tmp_path)
    args = ["--callbacks", "[helpers.serving.HoldSetup]"]
    log = tmp_path / "serve.log"
    with serving(exported, mlflow_server, log, *args, env=env, ready=False) as (url, process):
        wait_for_hold(hold, "setup", process)  # loading, and never let go: only SIGTERM can end it
        workers = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive
    assert "SIGTERM while the model loads: stopped" in log.read_text()


def test_a_full_queue_answers_503_at_once(exported, mlflow_server, tmp_path):
    hold, env = hold_env(tmp_path)
    args = ["--max_queue", "1", "--callbacks", "[helpers.serving.HoldForward]"]
    with serving(exported, mlflow_server, tmp_path / "serve.log", *args, env=env) as (url, process):
        answers = {}
        first = threading.Thread(target=lambda: answers.update(first=post(f"{url}/invocations", {"inputs": TEXTS})))
        first.start()
        wait_for_hold(hold, "forward", process)  # the one request the queue holds is in a forward pass
        status, body = post(f"{url}/invocations", {"inputs": TEXTS})
        assert status == 503 and body["error_code"] == "TEMPORARILY_UNAVAILABLE" and "--max_queue" in body["message"]
        open_hold(hold)
        first.join(timeout=120)
        assert len(rows_of(answers["first"])) == len(TEXTS)
        assert len(rows_of(post(f"{url}/invocations", {"inputs": TEXTS}))) == len(TEXTS)  # room again


def test_a_request_that_fails_in_a_batch_does_not_fail_the_others(server, exported, mlflow_server, tmp_path):
    expected = rows_of(post(f"{server[0]}/invocations", {"inputs": TEXTS}))
    # a batch is two requests, and waits up to 20 s for the second: the two, sent together, share one forward pass
    args = ["--max_batch_size", "2", "--batch_wait_ms", "20000", "--callbacks", "[helpers.serving.FailOnFail]"]
    with serving(exported, mlflow_server, tmp_path / "serve.log", *args) as (url, _):
        answers = {}
        threads = [
            threading.Thread(
                target=lambda key=key, texts=texts: answers.update({key: post(f"{url}/invocations", {"inputs": texts})})
            )
            for key, texts in (("fails", ["FAIL"]), ("fine", TEXTS))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    status, body = answers["fails"]
    assert status == 500 and body["error_code"] == "INTERNAL_ERROR" and "the model failed" in body["message"], body
    assert_same_answers(rows_of(answers["fine"]), expected)
    assert "the model failed on a request of 1 texts" in (tmp_path / "serve.log").read_text()


def connection_refused(url: str, seen: list) -> bool:
    """Whether a connection to `url` is refused (one accepted and closed, as a server does as it stops, is not);
    what happened instead goes in `seen`."""
    try:
        urllib.request.urlopen(url, timeout=5).close()
        seen.append("answered")
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionRefusedError):
            return True
        seen.append(repr(error))
    except ConnectionRefusedError:
        return True
    except (ConnectionError, TimeoutError) as error:
        seen.append(repr(error))
    return False


def test_sigterm_answers_the_accepted_requests_then_stops(exported, mlflow_server, tmp_path):
    hold, env = hold_env(tmp_path)
    # the first request waits at the hold in a forward pass, two more wait in the queue (or in that pass), a fourth
    # is refused
    args = ["--max_queue", "3"]
    log = tmp_path / "serve.log"
    with serving(exported, mlflow_server, log, *args, "--callbacks", "[helpers.serving.HoldForward]", env=env) as (
        url,
        process,
    ):
        workers = psutil.Process(process.pid).children(recursive=True)
        answers = {}

        def send(key: int) -> threading.Thread:
            thread = threading.Thread(
                target=lambda: answers.update({key: post(f"{url}/invocations", {"inputs": TEXTS[key % 4 :]})})
            )
            thread.start()
            return thread

        threads = [send(0), send(1)]
        wait_for_hold(hold, "forward", process)  # the first accepted, in a forward pass
        threads += [send(2), send(3)]  # of the last three to come, two are accepted, one is refused at once
        refused = first_to_finish(threads[1:])
        assert answers[threads.index(refused)][0] == 503
        process.send_signal(signal.SIGTERM)
        deadline, seen = time.monotonic() + 20, []
        while not connection_refused(f"{url}/ping", seen):  # until it accepts no new connection
            assert time.monotonic() < deadline, f"the server still accepts connections 20 s after SIGTERM: {seen}"
        open_hold(hold)
        for thread in threads:
            thread.join(timeout=120)
        assert process.wait(timeout=120) == 0
        _, alive = psutil.wait_procs(workers, timeout=30)  # each ends with the server's process
        assert not alive
    accepted = [key for key in range(4) if threads[key] is not refused]
    for key in accepted:
        status, body = answers[key]
        assert status == 200 and len(body["predictions"]) == len(TEXTS[key % 4 :]), (key, status, body)
    assert "SIGTERM: answering the accepted requests, then stopping" in log.read_text()
