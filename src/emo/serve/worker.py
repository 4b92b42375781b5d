"""The inference side of `emo serve`: LitServe's inference worker loads the model once and is handed, by LitServe's
batching loop, the requests that arrived together (up to `max_batch_size` of them, waiting at most `batch_wait_ms`
for more): their texts go through the model as one batch.

A request that fails does not fail the others: when the batch raises, each request is scored alone, and only the
ones that still raise are answered with an error (`Failed`).
"""

import logging

import numpy as np
from litserve import LitAPI
from litserve.loops import BatchedLoop

from emo.serve.lifetime import die_with_parent
from emo.serve.model import ServedModel
from emo.serve.protocol import INVOCATIONS, Failed, ScoringProtocol

log = logging.getLogger("emo.serve")


class TextClassifierAPI(LitAPI):
    """Requests (lists of texts) to their probabilities, batched by LitServe.

    Args:
        model: The downloaded version (`emo.serve.model.ServedModel`), loaded in the worker.
        protocol: The HTTP side (`emo.serve.protocol.ScoringProtocol`).
        max_batch_size: Requests taken together, at most.
        batch_wait_ms: How long the first request of a batch waits for others, at most.
        threads: An export's forward passes run at once, each on one thread (torch: its threads); 0: one per core.
    """

    def __init__(
        self, model: ServedModel, protocol: ScoringProtocol, max_batch_size: int, batch_wait_ms: float, threads: int = 0
    ):
        super().__init__(
            max_batch_size=max_batch_size,
            batch_timeout=batch_wait_ms / 1000,
            api_path=INVOCATIONS,
            spec=protocol,
            loop=BatchedLoop(),  # even for batches of one: predict always takes a list of requests
        )
        self.model, self.threads = model, threads

    def setup(self, device) -> None:
        die_with_parent()  # spawned by the server's process: ends with it
        self.classifier = self.model.load(self.threads)

    def decode_request(self, request: list[str]) -> list[str]:
        return request  # texts, checked by the HTTP worker before they were queued

    def batch(self, requests: list[list[str]]) -> list[list[str]]:
        return requests

    def predict(self, requests: list[list[str]]) -> list:
        """Each request's (probabilities, prediction sets or None), or `Failed`, in order, from one pass over all their
        texts."""
        try:
            probabilities, sets = self.classifier.predictions([text for texts in requests for text in texts])
        except Exception:
            if len(requests) == 1:
                return [self.failed(requests[0])]
            return [self.alone(texts) for texts in requests]
        rows = np.split(np.arange(len(probabilities)), np.cumsum([len(texts) for texts in requests])[:-1])
        return [(probabilities[index], [sets[i] for i in index] if sets else None) for index in rows]

    def alone(self, texts: list[str]):
        try:
            return self.classifier.predictions(texts)
        except Exception:
            return self.failed(texts)

    @staticmethod
    def failed(texts: list[str]) -> Failed:
        log.exception("emo serve: the model failed on a request of %d texts", len(texts))
        return Failed(f"the model failed on this request of {len(texts)} texts; the server log has why")

    def unbatch(self, outputs: list) -> list:
        return outputs

    def encode_response(self, output):
        return output
