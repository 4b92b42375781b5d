"""The journal's patience for records sent directly: a call that meets an outage waits for the store and tries again.

For what a sweep records in MLflow itself (its parent run, trial tags, aggregates, the registration,
the report) and for waiting on the server before a trial starts. Only an outage is waited out
(`emo.store.outage`); anything else is raised at once. Ctrl-C stops the waiting.
"""

import functools
import sys
import time

import mlflow

from emo.redact import redact
from emo.store.outage import described, is_outage
from emo.store.uri import CHECK_TIMEOUT_S, mlflow_http

LONGEST_WAIT_S = 30


def patiently(call, *args, uri: str = "", what: str = "", **kwargs):
    """`call(*args, **kwargs)`, tried again with growing pauses for as long as the store is away."""
    delay, waiting_since = 1.0, None
    while True:
        try:
            result = call(*args, **kwargs)
        except Exception as error:
            if not is_outage(error):
                raise
            if waiting_since is None:
                waiting_since = time.monotonic()
                print(
                    f"emo: waiting for the tracking server at {redact(uri) or '?'}{f' ({what})' if what else ''}: "
                    f"{described(error)[:160]}",
                    file=sys.stderr,
                )
            time.sleep(delay)
            delay = min(delay * 2, LONGEST_WAIT_S)
            continue
        if waiting_since is not None:
            print(f"emo: the tracking server is back after {time.monotonic() - waiting_since:.0f} s", file=sys.stderr)
        return result


class PatientClient:
    """An `MlflowClient` whose every call waits out an outage (see `patiently`)."""

    def __init__(self, client: mlflow.MlflowClient):
        self.client = client
        self.tracking_uri = client.tracking_uri

    def __getattr__(self, name: str):
        method = getattr(self.client, name)
        if not callable(method):
            return method
        return functools.partial(patiently, method, uri=self.tracking_uri, what=name)


def wait_for_server(uri: str) -> None:
    """Returns once the store answers (at once when it is up)."""

    def ask():
        with mlflow_http(retries=0, timeout_s=CHECK_TIMEOUT_S):
            mlflow.MlflowClient(uri).search_experiments(max_results=1)

    patiently(ask, uri=uri, what="before the next trial")
