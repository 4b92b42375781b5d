"""The HTTP side of `emo serve`: MLflow's scoring protocol (`/invocations`, `/ping`, `/version`) as a LitServe spec,
run by LitServe's HTTP workers (uvicorn), in front of the queue that LitServe's inference worker batches from.

A request is checked here (`emo.serve.contract`) and refused with 400 before it is queued; one that finds
`max_queue` requests already waiting or in a forward pass is refused at once with 503; the others wait for their
probabilities and are answered with `emo.export.served.answers`. Errors are MLflow's JSON,
`{"error_code": ..., "message": ...}`.
"""

import asyncio
import json
import time
import uuid
from collections.abc import Sequence

from litserve.specs.base import LitSpec
from litserve.utils import LitAPIStatus, ResponseBufferItem, WorkerSetupStatus
from starlette.requests import Request
from starlette.responses import Response

from emo.export.served import answers
from emo.serve.contract import BadRequest, Limits, texts_of

INVOCATIONS = "/invocations"


class Failed:
    """What the inference worker sends back for a request whose texts could not be scored: its message."""

    def __init__(self, message: str):
        self.message = message


def error(status: int, code: str, message: str) -> Response:
    return Response(json.dumps({"error_code": code, "message": message}), status, media_type="application/json")


class ScoringProtocol(LitSpec):
    """`/invocations` (POST), `/ping` and `/version` (GET) of MLflow's scoring server, for one served model.

    Args:
        labels: The model's classes in id order (the `p_<label>` keys).
        limits: What one request may hold (`emo.serve.contract.Limits`).
        max_queue: Requests accepted and not yet answered, at most; one more is answered 503 at once.
        version: What `/version` answers: the served model and the software serving it.
    """

    def __init__(self, labels: Sequence[str], limits: Limits, max_queue: int, version: dict):
        super().__init__()
        self.labels, self.limits, self.max_queue, self.version_info = list(labels), limits, max_queue, version
        self.api_path = INVOCATIONS
        self.accepted = 0  # in this HTTP worker: requests queued or in a forward pass
        self.add_endpoint(INVOCATIONS, self.invocations, ["POST"])
        self.add_endpoint("/ping", self.ping, ["GET"])
        self.add_endpoint("/version", self.version, ["GET"])

    def decode_request(self, request, context_kwargs=None):
        return request  # the texts, checked before they were queued

    def encode_response(self, output, context_kwargs=None):
        return output

    async def invocations(self, request: Request) -> Response:
        try:
            texts = texts_of(await request.body(), self.limits)
        except BadRequest as refused:
            return error(400, "BAD_REQUEST", str(refused))
        if self.accepted >= self.max_queue:
            return error(
                503, "TEMPORARILY_UNAVAILABLE", f"{self.accepted} requests are waiting (the most, --max_queue): retry"
            )
        self.accepted += 1
        uid, event = uuid.uuid4(), asyncio.Event()
        self.response_buffer[uid] = ResponseBufferItem(event=event)
        try:
            self.request_queue.put_nowait((self.response_queue_id, uid, time.monotonic(), texts))
            await event.wait()
            output, status = self.response_buffer[uid].response
        finally:  # answered, or the client went away: an answer that comes later finds no entry and is dropped
            self.response_buffer.pop(uid, None)
            self.accepted -= 1
        if status != LitAPIStatus.OK or isinstance(output, Failed):
            message = output.message if isinstance(output, Failed) else "the model failed on this request"
            return error(500, "INTERNAL_ERROR", message)
        return Response(json.dumps({"predictions": answers(self.labels, *output)}), media_type="application/json")

    async def ping(self) -> Response:
        """200 once the model is loaded in every inference worker, 503 before."""
        status = dict(self._server.workers_setup_status) if self._server else {}
        ready = bool(status) and all(value == WorkerSetupStatus.READY for value in status.values())
        return Response("\n" if ready else "loading\n", 200 if ready else 503)

    async def version(self) -> Response:
        return Response(json.dumps(self.version_info), media_type="application/json")
