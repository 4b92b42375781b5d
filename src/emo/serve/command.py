"""`python -m emo serve`: a registered emo model over HTTP, with dynamic batching (LitServe), on MLflow's scoring
protocol.

    python -m emo serve --model models:/NAME@champion               (its newest ONNX export: onnxruntime, no torch)
    python -m emo serve --model models:/NAME/VERSION --runtime torch      (the version itself: torch)

A registered version is served by its newest ONNX export (`emo export`) where it has one (`--runtime auto`), else
as it is, on torch; an export named directly is served as it is. The alias is resolved once, here, and the version
served is printed (and answered by `/version`): a new champion is served by a restart. The model is downloaded to a temporary folder; then this process becomes the server
(`emo.serve.server`, exec), which starts without MLflow and removes the folder when it stops. Bad input (a model
that is not registered, a port out of range) is one line before anything is downloaded.
"""

import dataclasses
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Literal

from jsonargparse import auto_cli

from emo import UsageError, UserError
from emo.arguments import OneLineParser
from emo.serve.contract import Limits
from emo.serve.model import ServedModel
from emo.spec import EXPORT_SOURCE_TAG
from emo.store import ModelSource, download_model, is_registered_model_uri, model_source, resolve_tracking_uri

DEFAULT_MAX_LENGTH = 128
REQUEST_TIMEOUT_S = 30  # LitServe's: a request queued longer is answered 504; a batch waits less than that


def serve(
    *,
    model: str,
    runtime: Literal["auto", "onnx", "torch"] = "auto",
    host: Literal["127.0.0.1", "0.0.0.0", "::"] = "127.0.0.1",
    port: int = 5001,
    max_batch_size: int = 32,
    batch_wait_ms: float = 1.0,
    max_queue: int = 256,
    threads: int = 0,
    max_texts: int = Limits.max_texts,
    max_text_chars: int = Limits.max_text_chars,
    callbacks: list[str] | None = None,
) -> None:
    """Serve a registered emo model over HTTP: /invocations, /ping, /version (MLflow's scoring protocol).

    Args:
        model: The registered model: models:/NAME@ALIAS or models:/NAME/VERSION (an emo model or its ONNX export).
        runtime: auto: the version's newest ONNX export where it has one, else the version on torch; onnx: its
            export, or one line that says to make one; torch: the version itself.
        host: 127.0.0.1 answers this machine only; 0.0.0.0 (or ::) every network, with no authentication.
        port: The port, 1024 to 65535.
        max_batch_size: Requests taken together, at most (their texts cut into forward passes of similar length).
        batch_wait_ms: How long a request waits for others to share its forward pass, at most (milliseconds).
        max_queue: Requests accepted and not yet answered, at most; one more is answered 503 at once.
        threads: An export's forward passes run at once, each on one thread (a torch version: torch's threads); 0: one
            per core.
        max_texts: Texts in one request, at most; more is a 400.
        max_text_chars: Characters in one text, at most; more is a 400. Texts are read up to the model's max_length
            tokens, the rest cut, as in training and emo predict.
        callbacks: LitServe callbacks (`litserve.Callback` classes, as import paths, made with no arguments), run
            in the server's processes: metrics, logging, or tests that hold a forward pass.
    """
    if not is_registered_model_uri(model):
        raise UsageError(f"--model {model}: name a registered model as models:/NAME@ALIAS or models:/NAME/VERSION")
    if not 1024 <= port <= 65535:
        raise UsageError(f"--port {port}: choose a port from 1024 to 65535")
    for name, value in (("max_batch_size", max_batch_size), ("max_queue", max_queue), ("max_texts", max_texts),
                        ("max_text_chars", max_text_chars)):  # fmt: skip
        if value < 1:
            raise UsageError(f"--{name} {value}: must be 1 or more")
    if threads < 0:
        raise UsageError(f"--threads {threads}: must be 0 (one per core) or more")
    if not 0 < batch_wait_ms < REQUEST_TIMEOUT_S * 1000:
        raise UsageError(
            f"--batch_wait_ms {batch_wait_ms}: choose more than 0 and less than {REQUEST_TIMEOUT_S * 1000}"
        )
    tracking_uri = resolve_tracking_uri()
    source = served_source(model_source(model, tracking_uri), runtime, tracking_uri)
    folder = Path(tempfile.mkdtemp(prefix="emo-serve-"))
    try:
        served = download(source, tracking_uri, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    given = f" ({model} at start: restart to follow the alias)" if "@" in model else ""
    print(f"emo serve: serving {source.pinned}{given}, run {source.run_id}", flush=True)
    settings = {
        "model": dataclasses.asdict(served),
        "given": model,
        "host": host,
        "port": port,
        "max_batch_size": max_batch_size,
        "batch_wait_ms": batch_wait_ms,
        "max_queue": max_queue,
        "threads": threads,
        "limits": {"max_texts": max_texts, "max_text_chars": max_text_chars},
        "callbacks": callbacks or [],
        "remove": str(folder),
    }
    os.execv(sys.executable, [sys.executable, "-m", "emo.serve.server", json.dumps(settings)])


def served_source(source: ModelSource, runtime: str, tracking_uri: str) -> ModelSource:
    """The version to serve for `source` and `runtime` (see `serve`)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    if EXPORT_SOURCE_TAG in client.get_model_version(source.name, source.version).tags:
        if runtime == "torch":
            raise UsageError(f"--model {source.given}: an ONNX export; serve its source with --runtime torch")
        return source
    if runtime == "torch":
        return source
    exports = client.search_model_versions(f"tags.`{EXPORT_SOURCE_TAG}` = '{source.pinned}'")
    if not exports:
        if runtime == "onnx":
            raise UserError(f"{source.pinned} has no ONNX export: python -m emo export --model {source.pinned}")
        print(f"emo serve: {source.pinned} has no ONNX export (python -m emo export makes one): served on torch")
        return source
    newest = max(exports, key=lambda version: int(version.creation_timestamp))
    pinned = f"models:/{newest.name}/{newest.version}"
    print(f"emo serve: {source.given} is {source.pinned}; served by its newest ONNX export, {pinned}")
    return ModelSource(source.given, pinned, newest.run_id, newest.name, str(newest.version))


def download(source, tracking_uri: str, folder: Path) -> ServedModel:
    """The registered version in `folder`: an ONNX export as it was logged, a transformers version's folders."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    version = client.get_model_version(source.name, source.version)
    if EXPORT_SOURCE_TAG in version.tags:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=source.model_uri, dst_path=str(folder), tracking_uri=tracking_uri, registry_uri=tracking_uri
        )
        return ServedModel.onnx(source.pinned, Path(path))
    model_dir, tokenizer_dir = download_model(source, tracking_uri, folder)
    params = client.get_run(source.run_id).data.params
    return ServedModel.torch(
        source.pinned, model_dir, tokenizer_dir, int(params.get("data.max_length", DEFAULT_MAX_LENGTH))
    )


def main(args=None) -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    auto_cli(serve, args=list(sys.argv[1:] if args is None else args), parser_class=OneLineParser)
