"""A real MLflow tracking server for tests and scripts, a served model, and waiting for an HTTP service without a fixed sleep."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


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


@contextlib.contextmanager
def served_model(uri: str, log: Path, env: dict | None = None, timeout_s: float = 240):
    """`mlflow models serve -m uri --env-manager local` on a free port, ready: yields its URL and process.

    Stopped on leaving with every process it started (SIGTERM, then SIGKILL after 30 s).
    """
    url = f"http://127.0.0.1:{free_port()}"
    bin_dir = str(Path(sys.executable).parent)  # the venv's: `mlflow` and the `uvicorn` it starts
    env = {**os.environ, **(env or {}), "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}
    command = [str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
               "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1]]  # fmt: skip
    with open(log, "w") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_http(server, f"{url}/ping", timeout_s, log)
        yield url, server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1, started lean (2 processes, ~0.5 GiB); tests may kill and restart it.

    It keeps its port and its store across restarts, as a server coming back from an outage does.
    """

    def __init__(
        self, folder: Path, extra_args: tuple[str, ...] = (), env: dict | None = None, backend_store_uri: str = ""
    ):
        self.folder = folder
        self.backend_store_uri = backend_store_uri or f"sqlite:///{folder}/mlflow.db"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = extra_args
        self.env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self) -> "MlflowServer":
        command = [
            str(Path(sys.executable).parent / "mlflow"), "server",
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", str(self.folder / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1", *self.extra_args,
        ]  # fmt: skip
        with open(self.folder / "server.log", "a") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout_s: float = 120) -> None:
        wait_for_http(self.process, f"{self.url}/health", timeout_s, self.folder / "server.log")

    def kill(self) -> None:
        """Gone at once, with all its processes, as in a crash or a network cut."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
