"""The masking rule of `emo.redact`, name by name and text by text, exactly as docs/reliability.md states it.
(End to end, a secret in the environment, a tag, a URL and a config file reaching nothing emo writes: test_security.py.)"""

import os
import sys
import threading

import pytest
from mlflow.utils.model_utils import env_var_tracker

from emo.redact import MASK, is_secret_name, redact, redact_item, secret_values, without_userinfo
from emo.store import use_mlflow_defaults

SECRET = "s3cr3t-Value-0042"

CREDENTIAL_NAMES = [
    "PGPASSWORD", "MLFLOW_TRACKING_PASSWORD", "DB_PASSWD", "MYSQL_PWD", "DB_PWD", "DB_PASS", "REDIS_PASS", "SMTP_PW",
    "MY_APIKEY", "OPENAI_API_KEY", "apiKey", "AZURE_STORAGE_KEY", "AWS_SECRET_ACCESS_KEY", "GITHUB_PRIVATE_KEY",
    "HF_TOKEN", "MLFLOW_TRACKING_TOKEN", "api_token", "AUTH", "AUTH_HEADER", "AUTHTOKEN", "AUTHORIZATION", "BASIC_AUTH",
    "DATABASE_DSN", "SENTRY_DSN", "PGDSN", "DSN", "DB_CONNECTION_STRING", "AccountKey", "SharedAccessKey",
    "GOOGLE_APPLICATION_CREDENTIALS", "CLIENT_SECRET", "SESSION_COOKIE",
]  # fmt: skip
ORDINARY_NAMES = [
    "tokenizer_name", "max_tokens", "AUTHOR", "author_email", "passes", "PATH", "HOME", "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME", "PGUSER", "PGHOST", "keyboard", "monkey", "model.learning_rate", "checkpoint.monitor",
]  # fmt: skip


@pytest.mark.parametrize("name", CREDENTIAL_NAMES)
def test_a_credential_like_environment_variable_is_masked_wherever_its_value_appears(name, monkeypatch):
    assert is_secret_name(name)
    monkeypatch.setenv(name, SECRET)
    assert redact(f"run-{SECRET}/x and again {SECRET}") == f"run-{MASK}/x and again {MASK}"
    assert redact_item(f"tags.{name}", "short") == MASK  # a param or tag so named: its value, whatever its length


@pytest.mark.parametrize("name", ORDINARY_NAMES)
def test_an_ordinary_environment_variable_is_left_alone(name, monkeypatch):
    assert not is_secret_name(name)
    monkeypatch.setenv(name, SECRET)
    assert redact(f"run-{SECRET}") == f"run-{SECRET}" and redact_item(name, SECRET) == SECRET


def test_a_short_environment_value_is_masked_only_where_a_secret_stands(monkeypatch):
    monkeypatch.setenv("DB_PASS", "abc12")  # under 6 characters: it would mask every word that holds it
    assert redact("abc12 abc123") == "abc12 abc123"
    assert redact("password=abc12") == f"password={MASK}" and redact_item("db_pass", "abc12") == MASK


TEXTS = [
    # URLs with a password, any scheme: the user stays, the password goes; userinfo without a password goes whole
    ("http://alice:pw1@host:5000/x", f"http://alice:{MASK}@host:5000/x"),
    ("https://alice:pw1@host/", f"https://alice:{MASK}@host/"),
    ("postgresql://etl:pw2@db.internal:5432/optuna", f"postgresql://etl:{MASK}@db.internal:5432/optuna"),
    ("postgresql+psycopg://etl:pw2@db/optuna", f"postgresql+psycopg://etl:{MASK}@db/optuna"),
    ("mysql://root:pw3@127.0.0.1/optuna", f"mysql://root:{MASK}@127.0.0.1/optuna"),
    ("mysql+pymysql://root:pw3@h/db?charset=utf8", f"mysql+pymysql://root:{MASK}@h/db?charset=utf8"),
    ("https://ghp_abc@github.com/o/r", f"https://{MASK}@github.com/o/r"),
    # a credential-like name, then = or :, in text
    ("password=pw4 next", f"password={MASK} next"),
    ("api_key: pw5", f"api_key: {MASK}"),
    ("DSN: postgresql://etl@db/warehouse", f"DSN: {MASK}"),
    ("dsn: 'DSN: etl secret words'", f"dsn: '{MASK}'"),  # a quoted value, spaces and all (a tag in config.yaml)
    ('{"token": "a b c"}', f'{{"token": "{MASK}"}}'),
    ("password: my secret phrase\nnext: line", f"password: {MASK}\nnext: line"),  # after a colon: the line's rest
    ("AUTH=pw6", f"AUTH={MASK}"),
    ("connection_string=pw7", f"connection_string={MASK}"),
    ('{"password": "pw8", "user": "bob"}', f'{{"password": "{MASK}", "user": "bob"}}'),
    (
        "DefaultEndpointsProtocol=https;AccountName=emo;AccountKey=pw9==;EndpointSuffix=x",
        f"DefaultEndpointsProtocol=https;AccountName=emo;AccountKey={MASK};EndpointSuffix=x",
    ),
    ("Server=db;Database=x;User Id=bob;Password=pw10;", f"Server=db;Database=x;User Id=bob;Password={MASK};"),
    ("Driver={x};Uid=bob;Pwd=pw11;", f"Driver={{x}};Uid=bob;Pwd={MASK};"),
    # bearer tokens
    ("Authorization: Bearer eyJ.pw12", f"Authorization: {MASK}"),
    ("curl -H 'Bearer eyJ.pw13'", f"curl -H 'Bearer {MASK}'"),
    # and nothing else
    ("http://127.0.0.1:5000/#/experiments/1", "http://127.0.0.1:5000/#/experiments/1"),
    ("tokenizer_name: bert, monitor: val/f1_weighted", "tokenizer_name: bert, monitor: val/f1_weighted"),
    ("emo: error: --data.max_length 4096: model x", "emo: error: --data.max_length 4096: model x"),
]


@pytest.mark.parametrize(("text", "masked"), TEXTS, ids=[text[:40] for text, _ in TEXTS])
def test_a_secret_in_text_is_masked_where_it_stands(text, masked):
    assert redact(text) == masked


def test_the_journal_keeps_where_to_send_without_any_credentials():
    assert without_userinfo("http://alice:pw1@host:5000") == "http://host:5000"
    assert without_userinfo("https://token@host") == "https://host"


def test_masking_reads_the_environment_whole_while_another_thread_changes_it(monkeypatch):
    """MLflow sets and removes variables in the sender's thread while it logs a model; the main thread masks text
    meanwhile (a suite run failed with KeyError: '_MLFLOW_IS_IN_SERVING_ENVIRONMENT')."""
    monkeypatch.setenv("PGPASSWORD", SECRET)
    unchanged = secret_values()  # with whatever else the machine holds (a CI token, say)
    assert SECRET in unchanged
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython can, so the copies and the changes interleave
    stop = threading.Event()

    def change() -> None:
        while not stop.is_set():
            for index in range(20):
                os.environ[f"EMO_TEST_CHANGING_{index}"] = "x"
            for index in range(20):
                del os.environ[f"EMO_TEST_CHANGING_{index}"]

    changer = threading.Thread(target=change, daemon=True)
    changer.start()
    try:
        seen = [secret_values() for _ in range(3000)]
    finally:
        stop.set()
        changer.join()
        sys.setswitchinterval(interval)
    assert all(values == unchanged for values in seen)


def test_mlflow_logs_a_model_without_watching_the_environment_that_masking_reads(monkeypatch):
    """MLflow's default replaces os.environ's reads in every thread while it logs a model and collects the names read
    into a set it then iterates: masking, reading every variable meanwhile, broke the sender ("Set changed size during
    iteration"). emo turns that off for every command (and conftest, as emo does)."""
    monkeypatch.delenv("MLFLOW_RECORD_ENV_VARS_IN_MODEL_LOGGING", raising=False)
    use_mlflow_defaults()
    with env_var_tracker() as read_while_logging:
        redact(f"password={SECRET}")
    assert read_while_logging == set()


@pytest.mark.parametrize("name", ["PWD", "OLDPWD"])
def test_the_shell_s_working_directory_is_not_taken_for_a_password(name, monkeypatch):
    """`PWD` is a word of MYSQL_PWD's kind, but the shell sets it to the working directory: every path under it in a
    run's config would read `***/data/emotion`. `OLDPWD` is no credential-like name at all (PWD is a word, not a part).
    As a key in text (`PWD=...` in an ODBC connection string) PWD is one."""
    monkeypatch.setenv(name, "/home/someone/emo")
    assert redact("data_dir: /home/someone/emo/data/emotion") == "data_dir: /home/someone/emo/data/emotion"
    assert redact("Driver={PostgreSQL};Uid=emo;PWD=hunter22;") == f"Driver={{PostgreSQL}};Uid=emo;PWD={MASK};"
