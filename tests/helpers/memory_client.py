"""An MLflow client that keeps runs in memory: for unit tests of the journal, the sender and the resume rule, where
the server is not the point. The end-to-end tests run against a real server (helpers.server).

`down = True` makes every call fail as MLflow's client fails when the server is away (an MlflowException
raised while handling a requests ConnectionError); `refuse` makes the next call fail with an HTTP status.
"""

import dataclasses
import types

import requests
from mlflow.exceptions import MlflowException, RestException


@dataclasses.dataclass
class MemoryRun:
    run_id: str
    status: str = "RUNNING"
    metrics: list = dataclasses.field(default_factory=list)  # (key, value, timestamp, step)
    params: dict = dataclasses.field(default_factory=dict)
    tags: dict = dataclasses.field(default_factory=dict)
    artifacts: list = dataclasses.field(default_factory=list)  # (local path, artifact path)
    inputs: list = dataclasses.field(default_factory=list)
    end_time: int | None = None

    @property
    def info(self):
        return types.SimpleNamespace(run_id=self.run_id, status=self.status, end_time=self.end_time)

    @property
    def data(self):
        latest = {key: value for key, value, _, _ in sorted(self.metrics, key=lambda m: m[3])}
        return types.SimpleNamespace(tags=dict(self.tags), params=dict(self.params), metrics=latest)


class MemoryClient:
    tracking_uri = "memory://"

    def __init__(self, *run_ids: str):
        self.runs = {run_id: MemoryRun(run_id) for run_id in run_ids}
        self.down = False
        self.refusals: list[int] = []  # HTTP statuses the next calls answer with
        self.calls = 0

    def answer(self) -> None:
        self.calls += 1
        if self.down:
            try:
                raise requests.exceptions.ConnectionError("[Errno 111] Connection refused")
            except requests.exceptions.ConnectionError as error:
                raise MlflowException(f"API request to memory:// failed with exception {error}") from None
        if self.refusals:
            status = self.refusals.pop(0)
            code = {
                400: "INVALID_PARAMETER_VALUE",
                401: "UNAUTHENTICATED",
                403: "PERMISSION_DENIED",
                404: "RESOURCE_DOES_NOT_EXIST",
                429: "REQUEST_LIMIT_EXCEEDED",
                503: "TEMPORARILY_UNAVAILABLE",
            }.get(status, "INTERNAL_ERROR")
            raise RestException(
                {"error_code": code, "message": f"refused with HTTP {status}"}
            )  # as the REST client raises it

    def get_run(self, run_id: str) -> MemoryRun:
        self.answer()
        if run_id not in self.runs:
            raise MlflowException(f"Run '{run_id}' not found", error_code="RESOURCE_DOES_NOT_EXIST")
        return self.runs[run_id]

    def log_batch(self, run_id: str, metrics=(), params=(), tags=()) -> None:
        run = self.get_run(run_id)
        run.metrics += [(m.key, m.value, m.timestamp, m.step) for m in metrics]
        run.params.update({p.key: p.value for p in params})
        run.tags.update({t.key: t.value for t in tags})

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.get_run(run_id).tags[key] = value

    def set_terminated(self, run_id: str, status: str = "FINISHED", end_time: int | None = None) -> None:
        run = self.get_run(run_id)
        run.status, run.end_time = status, end_time

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        run = self.get_run(run_id)
        with open(local_path, "rb"):  # a file that is gone fails as MLflow's upload does
            pass
        run.artifacts.append((local_path, artifact_path))

    def log_inputs(self, run_id: str, datasets=()) -> None:
        self.get_run(run_id).inputs += list(datasets)
