"""The `emo serve` process once the model is on disk: LitServe with one HTTP worker and one inference worker, and
SIGTERM that drains.

`emo serve` (`emo.serve.command`) resolves the model with MLflow, downloads it, then replaces itself (exec) by

    python -m emo.serve.server SETTINGS_JSON

so that the server's processes start without MLflow in memory; this process removes the download when it ends.

SIGTERM while the model loads stops at once (nothing was accepted yet). After, to this process or to its whole
process group: the HTTP worker stops accepting connections and answers every request it accepted (the inference worker, LitServe's manager and its queues live on until then), then the
inference worker stops and the process exits 0. The workers ignore SIGTERM themselves: this process stops them in
that order.
"""

import importlib
import json
import os
import shutil
import signal
import sys
import threading
from importlib.metadata import version

from litserve import LitServer
from litserve.loops.base import _SENTINEL_VALUE

from emo import __version__
from emo.serve.contract import Limits
from emo.serve.lifetime import close_sockets_on, die_with_parent
from emo.serve.model import ServedModel
from emo.serve.protocol import INVOCATIONS, ScoringProtocol
from emo.serve.worker import TextClassifierAPI


class DrainingServer(LitServer):
    """LitServer whose SIGTERM finishes the accepted requests before anything stops."""

    def run(self, host: str, port: int, **kwargs) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the manager and the workers started next
        self.port, self.forking_manager = port, False
        os.register_at_fork(after_in_child=self.after_fork)  # the manager and the HTTP worker are forked from here
        super().run(host=host, port=port, **kwargs)

    def _init_manager(self, num_api_servers: int):
        self.forking_manager = True  # LitServe forks its queue manager here, after it bound the listening socket
        try:
            return super()._init_manager(num_api_servers)
        finally:
            self.forking_manager = False

    def after_fork(self) -> None:
        die_with_parent()
        if self.forking_manager:
            close_sockets_on(self.port)

    def verify_worker_status(self) -> None:
        """LitServer waits here while the model loads: nothing is accepted yet, so SIGTERM stops at once."""
        signal.signal(signal.SIGTERM, self.stop_loading)
        try:
            super().verify_worker_status()
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the HTTP workers forked next set their own

    def stop_loading(self, *_) -> None:
        print("emo serve: SIGTERM while the model loads: stopped", file=sys.stderr, flush=True)
        for worker in self.inference_workers:
            worker.kill()  # multiprocessing joins its children as this process exits
        raise SystemExit(0)

    def _start_server(self, port, num_uvicorn_servers, log_level, sockets, *args, **kwargs):
        http_workers = super()._start_server(port, num_uvicorn_servers, log_level, sockets, *args, **kwargs)
        # uvicorn has set its own SIGTERM handler in each HTTP worker
        drain = threading.Thread(target=self.drain, args=(http_workers, sockets), name="drain")
        signal.signal(signal.SIGTERM, lambda *_: drain.ident or drain.start())  # once
        return http_workers

    def drain(self, http_workers: dict, sockets: list) -> None:
        print("emo serve: SIGTERM: answering the accepted requests, then stopping", file=sys.stderr, flush=True)
        for sock in sockets:  # this process's copy of the listening socket: once the workers close theirs, new
            sock.close()  # connections are refused, not left waiting
        for worker in http_workers.values():
            os.kill(worker.pid, signal.SIGTERM)  # uvicorn: no new connections; waits for the requests it has
        for worker in http_workers.values():
            worker.join()
        for _ in self.inference_workers:
            self._get_request_queue(INVOCATIONS).put(_SENTINEL_VALUE)  # each inference worker leaves its loop
        self._shutdown_event.set()  # LitServer.run returns, and stops the rest


def serve(settings: dict) -> None:
    """Serves `settings["model"]` (a `ServedModel`'s fields) with the batching and limits in `settings`."""
    model = ServedModel(**{**settings["model"], "labels": tuple(settings["model"]["labels"])})
    limits = Limits(**settings["limits"])
    about = {"model": model.uri, "given": settings["given"], "kind": model.kind, "emo": __version__}
    about["litserve"] = version("litserve")
    protocol = ScoringProtocol(model.labels, limits, settings["max_queue"], about)
    api = TextClassifierAPI(model, protocol, settings["max_batch_size"], settings["batch_wait_ms"], settings["threads"])
    server = DrainingServer(
        api,
        accelerator="cpu",
        workers_per_device=1,
        max_payload_size=limits.max_body_bytes,
        disable_openapi_url=True,
        callbacks=[instance(path) for path in settings["callbacks"]],
    )
    print(
        f"emo serve: {model.uri} ({model.kind}) on http://{settings['host']}:{settings['port']}: batches of up to "
        f"{settings['max_batch_size']} requests, {settings['batch_wait_ms']} ms wait, {settings['max_queue']} "
        f"requests queued at most; /ping answers 200 once it is loaded",
        flush=True,
    )
    server.run(
        host=settings["host"],
        port=settings["port"],
        num_api_servers=1,
        log_level="warning",
        generate_client_file=False,
    )
    print("emo serve: stopped", file=sys.stderr, flush=True)


def instance(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)()


def main(argv: list[str] | None = None) -> None:
    settings = json.loads((sys.argv[1:] if argv is None else argv)[0])
    try:
        serve(settings)
    finally:
        if settings.get("remove"):
            shutil.rmtree(settings["remove"], ignore_errors=True)


if __name__ == "__main__":
    main()
