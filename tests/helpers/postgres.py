"""A real PostgreSQL server for a test: a temporary cluster on 127.0.0.1, run as an unprivileged user.

Debian's PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` user (which
Debian's package creates), else to whoever runs the tests. `initdb` and `postgres` are found through
`pg_config --bindir`, as Debian keeps them off PATH.
"""

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .server import free_port


def bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if not pg_config:
        return None
    return Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout.strip())


class PostgresServer:
    """`start()` makes the cluster and starts it; `url(database)` is a SQLAlchemy URL; `stop()` removes it all."""

    def __init__(self, *databases: str):
        self.databases = databases
        self.bin = bindir()
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="emo-postgres-"))  # not under pytest's root-only tmp folders
        self.user = pwd.getpwnam("postgres") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
        self.process: subprocess.Popen | None = None

    def as_owner(self) -> None:
        if os.geteuid() == 0:
            os.setgid(self.user.pw_gid)
            os.setuid(self.user.pw_uid)

    def run(self, *command: str) -> None:
        subprocess.run(command, check=True, capture_output=True, preexec_fn=self.as_owner, cwd=self.folder, timeout=120)

    def start(self) -> "PostgresServer":
        os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
        data = self.folder / "data"
        self.run(str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        log = open(self.folder / "postgres.log", "w")  # noqa: SIM115 - the server writes it for its life
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.folder),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=self.as_owner, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
        ).returncode:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start:\n{(self.folder / 'postgres.log').read_text()[-3000:]}")
            time.sleep(0.2)
        for database in self.databases:
            self.run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", database)
        return self

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown: connected clients are let go
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        shutil.rmtree(self.folder, ignore_errors=True)
