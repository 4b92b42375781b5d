"""Nobody in: local servers, MLflow's basic-auth app, no secret in the record, checkpoints loaded without pickle."""

import json
import pickle
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.server import get_app_client

from emo.fit.checkpoint_files import CheckpointError, CheckpointFiles
from helpers.data import ROOT, one_epoch_named, shrunk_args
from helpers.gates import open_gate, wait_for_reached
from helpers.processes import run_emo, start_emo
from helpers.records import assert_complete_record, outage_fit_args
from helpers.secrets import file_texts, leaks, run_texts
from helpers.server import MlflowServer

SECRETS = {  # what a researcher's shell may hold while training; the test puts each one into the record
    "MLFLOW_TRACKING_PASSWORD": "pw-9f2c1e7a-tracking",  # in the tracking URI
    "HF_TOKEN": "hf_s3cr3tT0kenValue1234",  # in a tag's text
    "AWS_SECRET_ACCESS_KEY": "aws/S3cr3tAcc3ssK3yValue+987",  # in a config file
    "AZURE_STORAGE_KEY": "azureKeyValue0123456789==",  # in a connection string, in the run's name
    "OPENAI_API_KEY": "sk-proj-0a1b2c3d4e",  # in the environment of a config value (the run name)
    "PGPASSWORD": "pgS3cretPassw0rd",  # names that do not hold a whole word PASSWORD or KEY: in the tags too
    "DB_PASS": "dbPassValue-77",
    "MY_APIKEY": "myApiKeyValue-42",
}
DSN = "postgresql://etl@db.internal/warehouse?sslkey=dsnS3cretValue"  # a tag named DSN, in config.yaml as `DSN: ...`
SPACED = "DSN: etl sp4cedDsnS3cret"  # a tag named dsn whose value has spaces: config.yaml quotes it, `dsn: 'DSN: ...'`
SHORT_SECRET = "k3y9"  # too short to mask anywhere: masked where a secret is known to stand


@pytest.mark.parametrize("target", ["ui", "server"])
def test_make_ui_and_server_listen_on_localhost_only(target):
    command = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "--host 127.0.0.1" in command and "0.0.0.0" not in command


@pytest.fixture
def auth_server(tmp_path):
    folder = tmp_path / "auth-server"
    folder.mkdir()
    config = folder / "basic_auth.ini"
    config.write_text(
        f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{folder}/basic_auth.db\n"
        "admin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # A credential checked once is trusted for 5 minutes (wrong ones never are): without it the server hashes the
        # password on every request, ~0.7 s each on a busy 2-core machine, hundreds of times a fit.
        "auth_cache_ttl_seconds = 300\n"
    )
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password-1234",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-csrf-key",
    }
    server = MlflowServer(folder, extra_args=("--app-name", "basic-auth"), env=env).start()
    yield server
    server.kill()


def status_without_credentials(url: str) -> int:
    try:
        urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    except urllib.error.HTTPError as error:
        return error.code
    return 200


def test_basic_auth_server_refuses_strangers_takes_emo_and_never_sees_a_secret(
    tmp_path, tiny_model_dir, small_data_dir, auth_server, monkeypatch
):
    assert status_without_credentials(auth_server.url) == 401
    name = "auth-test"
    stranger = [
        "fit",
        *shrunk_args(
            tmp_path,
            tiny_model_dir,
            small_data_dir,
            "--trainer.logger.init_args.experiment_name",
            name,
            "--registry.registered_model_name",
            name,
        ),
    ]
    # Secrets typed where they do not belong, on top of those in the environment: the record must hold none.
    config = tmp_path / "secrets.yaml"
    config.write_text(
        f"trainer:\n  logger:\n    init_args:\n      tags:\n        aws: {SECRETS['AWS_SECRET_ACCESS_KEY']}\n"
        f"        api_token: {SHORT_SECRET}\n"
    )
    storage = (
        f"DefaultEndpointsProtocol=https;AccountName=emo;AccountKey={SECRETS['AZURE_STORAGE_KEY']};EndpointSuffix=x"
    )
    args = [*stranger, "--config", str(config), "--trainer.logger.init_args.tracking_uri",
            auth_server.url.replace("://", f"://researcher:{SECRETS['MLFLOW_TRACKING_PASSWORD']}@"),
            "--trainer.logger.init_args.run_name", f"run-{SECRETS['OPENAI_API_KEY']}-{storage}",
            "--trainer.logger.init_args.tags", json.dumps({"note": f"token {SECRETS['HF_TOKEN']}", "api_token": SHORT_SECRET,
                                                           "aws": SECRETS["AWS_SECRET_ACCESS_KEY"], "DSN": DSN, "dsn": SPACED,
                                                           "db": f"{SECRETS['PGPASSWORD']} {SECRETS['DB_PASS']}",
                                                           "other": SECRETS["MY_APIKEY"]})]  # fmt: skip
    code, output = run_emo(stranger, tmp_path / "stranger.log", env={"MLFLOW_TRACKING_URI": auth_server.url})
    assert code != 0 and "Traceback" not in output
    assert (
        output.strip()
        .splitlines()[-1]
        .startswith(f"emo: error: the tracking server at {auth_server.url} refused emo (HTTP 401)")
    )

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "admin-password-1234")
    get_app_client("basic-auth", tracking_uri=auth_server.url).create_user(
        "researcher", SECRETS["MLFLOW_TRACKING_PASSWORD"]
    )
    args += [
        "--trainer.logger.init_args.flush_timeout_s",
        "600",
    ]  # all of it reaches the server, however busy the machine
    code, output = run_emo(
        args,
        tmp_path / "researcher.log",
        env={**SECRETS, "MLFLOW_TRACKING_USERNAME": "researcher", "MLFLOW_TRACKING_URI": auth_server.url},
    )
    assert code == 0, output[-3000:]

    client = mlflow.MlflowClient(auth_server.url)  # as admin, who may read everything
    [run] = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.user"] != "admin"
    recorded = run_texts(client, run, tmp_path / "downloads")  # the store: params, tags, artifacts, the model
    local = file_texts(tmp_path / "outputs")  # the run folder: journal, checkpoints (last and best), artifacts
    console = [("console", output)]
    assert any(where.endswith("config.yaml") for where, _ in recorded) and len(recorded) > 100
    assert len([where for where, _ in local if where.endswith(".ckpt")]) == 2 and any("journal" in w for w, _ in local)
    secrets = {**SECRETS, "DSN": "dsnS3cretValue", "spaced": "sp4cedDsnS3cret", "short": SHORT_SECRET}
    assert leaks(secrets, recorded + local + console) == []
    planted = "".join(text for _, text in recorded if "***" in text)
    assert "AccountKey=***" in planted and "api_token: ***" in planted and "DSN: ***" in planted
    assert run.data.tags["api_token"] == run.data.tags["DSN"] == "***"
    assert run.data.params["trainer.logger.init_args.tracking_uri"] == auth_server.url.replace(
        "://", "://researcher:***@"
    )


def test_emo_sync_delivers_to_a_server_with_a_password_after_an_outage(
    tmp_path, tiny_model_dir, small_data_dir, auth_server, monkeypatch
):
    """The journal keeps where to send without the password; `emo sync` takes it from the environment at sending time."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "admin-password-1234")
    get_app_client("basic-auth", tracking_uri=auth_server.url).create_user("researcher", "pw-researcher-5678")
    with_password = auth_server.url.replace("://", "://researcher:pw-researcher-5678@")
    name = "auth-outage-test"
    args = outage_fit_args(
        tmp_path, tiny_model_dir, small_data_dir, name, "--trainer.logger.init_args.flush_timeout_s", "2"
    )
    researcher = {"MLFLOW_TRACKING_URI": with_password, "MLFLOW_TRACKING_USERNAME": "", "MLFLOW_TRACKING_PASSWORD": ""}
    process = start_emo(args, tmp_path / "fit.log", env=researcher)
    wait_for_reached(tmp_path / "down", processes=1, watch=(process,))
    auth_server.kill()
    open_gate(tmp_path / "down")
    open_gate(tmp_path / "up")
    assert process.wait(timeout=600) == 0, (tmp_path / "fit.log").read_text()[-3000:]
    assert "`emo sync` sends them" in (tmp_path / "fit.log").read_text()
    [journal] = (tmp_path / "outputs").glob("*/*/journal.jsonl")
    assert json.loads(journal.read_text().splitlines()[0])["tracking_uri"] == auth_server.url  # no password, no mask
    assert "pw-researcher-5678" not in journal.read_text()

    auth_server.start()
    code, output = run_emo(
        ["sync", "--root", str(tmp_path / "outputs")],
        tmp_path / "sync.log",
        env={
            "MLFLOW_TRACKING_URI": "",
            "MLFLOW_TRACKING_USERNAME": "researcher",
            "MLFLOW_TRACKING_PASSWORD": "pw-researcher-5678",
        },
    )
    assert code == 0 and f"to {auth_server.url}" in output, output[-3000:]
    assert_complete_record(mlflow.MlflowClient(auth_server.url), name)  # read as admin


def test_registered_weights_are_safetensors(tmp_path, tiny_model_dir, small_data_dir, tracking_uri):
    name = "safetensors-test"
    code, output = run_emo(
        [
            "fit",
            *shrunk_args(
                tmp_path,
                tiny_model_dir,
                small_data_dir,
                *one_epoch_named(name),
            ),
        ],
        tmp_path / "fit.log",
    )
    assert code == 0, output[-3000:]
    model = mlflow.artifacts.download_artifacts(f"models:/{name}/1", dst_path=str(tmp_path / "model"))
    files = {p.name for p in Path(model).rglob("*")}
    assert "model.safetensors" in files and not {f for f in files if f.endswith((".bin", ".pt", ".pkl"))}


class Payload:
    def __reduce__(self):  # what a malicious checkpoint would run when unpickled
        return (print, ("pwned",))


def test_checkpoints_are_read_without_running_pickled_code(tmp_path, capsys):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "emo": Payload()}, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(CheckpointError, match="not a checkpoint that can be loaded safely"):
        CheckpointFiles().read(path)
    assert "pwned" not in capsys.readouterr().out
