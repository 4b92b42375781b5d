"""The champion served and run every way that matters, measured side by side in one run on one machine.

    export MLFLOW_TRACKING_URI=sqlite:////tmp/serve/mlflow.db
    python -m emo export --model models:/minilm-emotion-classifier@champion          # int8: NAME-onnx/1
    python -m scripts.serve_benchmark --source models:/minilm-emotion-classifier@champion \\
        --export models:/minilm-emotion-classifier-onnx/1

In process first (this process, nothing else running): the export's own `predict` (`mlflow.pyfunc.load_model`)
and its bare graph (onnxruntime and `tokenizers`, nothing else: the limit), one text at a time and in batches of
32 of similar length, in --rounds interleaved rounds (the median round counts). Then each server in turn, alone, on
127.0.0.1: the transformers flavor and the export under `mlflow models serve`, the export under `emo serve` (and,
with --mlserver_python, under MLServer's MLflow runtime, `mlserver start`; with --emo_serve_variants, `emo serve`
with other batching settings). Each server takes 1, 4 and 16 concurrent
clients (one asyncio loop, keep-alive connections) of single-text requests, then of batches of 32: texts/s and
the p50 and p99 latency of a request; the RSS of the server's whole process tree after its loads. `emo serve`
then takes --soak more single-text requests from 16 clients: its RSS before and after. Last, `emo predict` of the
16,000 training texts from the torch version and from the export, wall time from the command to the CSV.

Writes reports/benchmarks/serve.md (the tables) and serve.json; prints each figure as it comes, with the load
average (the machine may be shared: compare ratios within one run).
"""

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from tests.helpers.data import ROOT
from tests.helpers.server import free_port, served_model, wait_for_http

CLIENTS = (1, 4, 16)
BATCH = 32


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def figures(seconds: float, texts: int, latencies: list[float]) -> dict:
    return {
        "texts_per_s": texts / seconds,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
        "load_average": os.getloadavg()[0],
    }


async def http_load(url: str, jobs: list[list[str]], clients: int) -> tuple[float, list[float], list]:
    """`jobs` (each a request's texts) sent by `clients` concurrent clients: wall seconds, latencies, answers."""
    import aiohttp

    bodies = [json.dumps({"inputs": texts}).encode() for texts in jobs]
    answers, latencies, next_job = [None] * len(jobs), [], iter(range(len(jobs)))
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client():
            for i in next_job:
                start = time.perf_counter()
                async with session.post(url, data=bodies[i], headers={"Content-Type": "application/json"}) as response:
                    answer = await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url}: {response.status} {answer[:300]!r}")
                latencies.append(time.perf_counter() - start)
                answers[i] = answer

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - start, latencies, answers


def tree_rss_gib(pid: int) -> float:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**30


def load_server(url: str, pid: int, texts: list[str], requests: int) -> dict:
    """1, 4, 16 clients of single texts, then of batches of 32: each load's figures, and the RSS after them."""
    invocations = f"{url}/invocations"
    asyncio.run(http_load(invocations, [[text] for text in texts[:16]], 4))  # warm-up
    result = {}
    for clients in CLIENTS:
        singles = [[text] for text in (texts * (1 + requests // len(texts)))[:requests]]
        seconds, latencies, _ = asyncio.run(http_load(invocations, singles, clients))
        result[f"single/{clients}"] = figures(seconds, len(singles), latencies)
        print(f"  {clients:>2} clients, single texts: {json.dumps(result[f'single/{clients}'])}", flush=True)
    for clients in CLIENTS:
        batches = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
        seconds, latencies, answers = asyncio.run(http_load(invocations, batches, clients))
        result[f"batch/{clients}"] = figures(seconds, len(texts), latencies)
        print(f"  {clients:>2} clients, batches of {BATCH}: {json.dumps(result[f'batch/{clients}'])}", flush=True)
    result["labels"] = [row["label"] for answer in answers for row in json.loads(answer)["predictions"]]
    result["rss_gib"] = tree_rss_gib(pid)
    return result


@contextlib.contextmanager
def emo_serve(uri: str, log: Path, *settings: str):
    """`python -m emo serve` on a free port, ready; stopped (SIGTERM, as a user stops it) on leaving."""
    port = free_port()
    command = [sys.executable, "-m", "emo", "serve", "--model", uri, "--port", str(port), *settings]
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    try:
        wait_for_http(server, f"http://127.0.0.1:{port}/ping", 600, log)
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.terminate()
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()


@contextlib.contextmanager
def mlserver(uri: str, log: Path, python: str):
    """MLServer's MLflow runtime (`mlserver start`; MLflow 3.17's `mlflow models serve` no longer has
    --enable-mlserver) on the downloaded model, from the environment of `python`: MLServer's pins conflict with
    emo's, so it has its own. Its /invocations is MLflow's contract."""
    import mlflow

    bin_dir = Path(python).parent
    folder = log.with_suffix("")
    folder.mkdir()
    model = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder / "model"))
    port = free_port()
    (folder / "settings.json").write_text(json.dumps({"http_port": port, "grpc_port": free_port(),
                                                      "metrics_port": free_port(), "parallel_workers": 0}))  # fmt: skip
    (folder / "model-settings.json").write_text(json.dumps({"name": "emo", "implementation":
                                                            "mlserver_mlflow.MLflowRuntime", "parameters": {"uri": model}}))  # fmt: skip
    env = {**os.environ, "PATH": os.pathsep.join([str(bin_dir), os.environ["PATH"]])}
    with open(log, "w") as out:
        server = subprocess.Popen([str(bin_dir / "mlserver"), "start", str(folder)], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        wait_for_http(server, f"http://127.0.0.1:{port}/v2/health/ready", 600, log)
        yield f"http://127.0.0.1:{port}", server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, 15)
        server.wait(timeout=120)


def bare_graph(folder: Path, threads: int):
    """The export's graph and tokenizer, nothing else: texts to logits, padded to the longest."""
    import numpy as np
    import onnxruntime
    from tokenizers import Tokenizer

    settings = json.loads((folder / "tokenizer" / "classifier.json").read_text())
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer" / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=settings["max_length"])
    tokenizer.enable_padding(pad_id=settings["pad_id"], pad_token=settings["pad_token"])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def run(texts: list[str]):
        encodings = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]

    return run


def in_process(export_uri: str, texts: list[str], singles: int, folder: Path, rounds: int) -> dict:
    """The export's predict and its bare graph, single texts and length-sorted batches of 32 of `texts`: each in
    turn, `rounds` times over (on a shared machine the speed drifts over minutes; interleaved, every way meets the
    same drift), the median round's texts/s and the latencies of all rounds."""
    import mlflow

    model = mlflow.pyfunc.load_model(export_uri)
    path = Path(mlflow.artifacts.download_artifacts(artifact_uri=export_uri, dst_path=str(folder / "export")))
    single = [[text] for text in texts[:singles]]
    ordered = sorted(texts, key=len)
    batches = [ordered[i : i + BATCH] for i in range(0, len(ordered), BATCH)]
    calls = (
        ("export predict", model.predict),
        ("bare graph, 1 thread", bare_graph(path / "artifacts", 1)),
        ("bare graph, 2 threads", bare_graph(path / "artifacts", 2)),
    )
    seconds, latencies = {}, {}
    for _ in range(rounds):
        for name, call in calls:
            for kind, jobs in (("single", single), ("batch", batches)):
                call(jobs[0])  # warm-up
                began = time.perf_counter()
                timed = [time_call(call, texts) for texts in jobs]
                seconds.setdefault(f"{name}/{kind}", []).append(time.perf_counter() - began)
                latencies.setdefault(f"{name}/{kind}", []).extend(timed)
    result = {}
    for key, rounds_s in seconds.items():
        texts_sent = len(single) if key.endswith("single") else len(texts)
        result[key] = figures(statistics.median(rounds_s), texts_sent, latencies[key])
        result[key]["rounds_texts_per_s"] = [texts_sent / s for s in rounds_s]
        print(f"{key}: {json.dumps(result[key])}", flush=True)
    return result


def time_call(call, texts: list[str]) -> float:
    began = time.perf_counter()
    call(texts)
    return time.perf_counter() - began


def predict_wall(uri: str, texts_file: Path, folder: Path) -> float:
    """Seconds for `python -m emo predict` of `texts_file`, start-up included."""
    output = folder / f"predictions-{time.monotonic_ns()}.csv"
    command = [sys.executable, "-m", "emo", "predict", "--config", str(ROOT / "configs/base.yaml"), "--config",
               str(ROOT / "configs/offline.yaml"), "--ckpt_path", uri, "--data.predict_file", str(texts_file),
               "--prediction.output_file", str(output), "--trainer.enable_progress_bar", "false"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}:\n{done.stderr[-3000:]}")
    return wall


def split(data_dir: Path, name: str) -> tuple[list[str], list[str]]:
    rows = [line.rsplit(";", 1) for line in (data_dir / f"{name}.txt").read_text().splitlines() if line.strip()]
    return [text for text, _ in rows], [label for _, label in rows]


def tables(measured: dict) -> str:
    """The tables of serve.md: servers (ratios to the transformers flavor), in process, emo predict."""
    servers, inside = measured["servers"], measured["in_process"]
    base = servers.get("transformers, mlflow models serve") or next(iter(servers.values()), None)
    head = ["server", "RSS GiB"] + [
        f"{kind} x{c}: texts/s, p50/p99 ms" for kind in ("single", "batch") for c in CLIENTS
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in servers.items() if base else ():
        cells = [name, f"{r['rss_gib']:.2f} ({r['rss_gib'] / base['rss_gib']:.2f}x)"]
        for kind in ("single", "batch"):
            for clients in CLIENTS:
                f, b = r[f"{kind}/{clients}"], base[f"{kind}/{clients}"]
                cells.append(
                    f"{f['texts_per_s']:.0f} ({f['texts_per_s'] / b['texts_per_s']:.1f}x), "
                    f"{f['p50_ms']:.1f}/{f['p99_ms']:.0f}"
                )
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| in process | texts/s (median round) | each round | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    for name, f in inside.items():
        each = ", ".join(f"{r:.0f}" for r in f.get("rounds_texts_per_s", ()))
        lines.append(f"| {name} | {f['texts_per_s']:.0f} | {each} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} |")
    if "soak" in measured:
        s = measured["soak"]
        lines += ["", f"emo serve RSS: {s['before_gib']:.3f} GiB before, {s['after_gib']:.3f} GiB after {s['requests']} "
                  f"more single-text requests from 16 clients ({s['texts_per_s']:.0f} texts/s)"]  # fmt: skip
    lines += ["", "| `emo predict`, 16,000 training texts, wall incl. start-up | s | texts/s |", "|---|---|---|"]
    lines += [f"| {name} | {s:.1f} | {16000 / s:.0f} |" for name, s in measured["predict_s"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="the registered transformers model, models:/NAME@ALIAS")
    parser.add_argument("--export", required=True, help="its ONNX export (int8), models:/NAME-onnx/VERSION")
    parser.add_argument("--data_dir", default=str(ROOT / "data/emotion"))
    parser.add_argument("--texts", type=int, default=2000, help="test texts sent in batches of 32 per load")
    parser.add_argument("--requests", type=int, default=400, help="single-text requests per load")
    parser.add_argument("--singles", type=int, default=400, help="single texts in process")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the in-process figures, interleaved")
    parser.add_argument("--soak", type=int, default=10_000, help="single-text requests to emo serve before its RSS")
    parser.add_argument("--mlserver_python", help="the python of an environment with mlserver and mlserver-mlflow")
    parser.add_argument("--emo_serve_variants", nargs="*", default=[], help='more `emo serve` settings to load, each '
                        'as one string: "--max_batch_size 16 --batch_wait_ms 1"')  # fmt: skip
    parser.add_argument("--skip_predict", action="store_true", help="leave out the emo predict rows")
    parser.add_argument("--servers", nargs="*", help="only the servers whose names hold one of these words")
    parser.add_argument("--output_dir", default=str(ROOT / "reports/benchmarks"))
    args = parser.parse_args()
    data_dir, output_dir = Path(args.data_dir), Path(args.output_dir)
    texts, labels = split(data_dir, "test")
    texts, labels = texts[: args.texts], labels[: args.texts]
    measured = {"load_average_at_start": os.getloadavg(), "servers": {}}
    with tempfile.TemporaryDirectory(prefix="serve-benchmark-") as folder:
        folder = Path(folder)
        measured["in_process"] = in_process(args.export, texts, args.singles, folder, args.rounds)
        servers = [
            ("transformers, mlflow models serve", lambda log: served_model(args.source, log, timeout_s=600)),
            ("export, mlflow models serve", lambda log: served_model(args.export, log, timeout_s=600)),
            ("export, emo serve", lambda log: emo_serve(args.export, log)),
        ]
        if args.mlserver_python:
            servers.append(("export, MLServer's MLflow runtime", lambda log: mlserver(args.export, log,
                                                                                                args.mlserver_python)))  # fmt: skip
        for variant in args.emo_serve_variants:
            servers.append(
                (f"export, emo serve {variant}", lambda log, v=variant: emo_serve(args.export, log, *v.split()))
            )
        for name, start in servers:
            if args.servers and not any(word in name for word in args.servers):
                continue
            print(name, flush=True)
            started = time.perf_counter()
            with start(folder / f"server-{len(measured['servers'])}.log") as (url, server):
                ready_s = time.perf_counter() - started
                result = load_server(url, server.pid, texts, args.requests)
                if name == "export, emo serve" and args.soak:
                    before = tree_rss_gib(server.pid)
                    jobs = [[text] for text in (texts * (1 + args.soak // len(texts)))[: args.soak]]
                    seconds, _, _ = asyncio.run(http_load(f"{url}/invocations", jobs, 16))
                    measured["soak"] = {"requests": args.soak, "before_gib": before, "texts_per_s": args.soak / seconds,
                                        "after_gib": tree_rss_gib(server.pid)}  # fmt: skip
                    print(f"  soak: {json.dumps(measured['soak'])}", flush=True)
            predicted = result.pop("labels")
            result["accuracy"] = sum(p == t for p, t in zip(predicted, labels, strict=True)) / len(labels)
            result["ready_s"] = ready_s
            measured["servers"][name] = result
            print(
                f"  RSS {result['rss_gib']:.3f} GiB, accuracy {result['accuracy']:.4f}, ready {ready_s:.0f} s",
                flush=True,
            )
        measured["predict_s"] = {}
        if not args.skip_predict:
            train_file = folder / "train-texts.txt"
            train_file.write_text("\n".join(split(data_dir, "train")[0]) + "\n")
            for name, uri in ((f"torch ({args.source})", args.source), (f"export ({args.export})", args.export)):
                measured["predict_s"][name] = predict_wall(uri, train_file, folder)
                print(f"emo predict, {name}: {measured['predict_s'][name]:.1f} s", flush=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = tables(measured)
    (output_dir / "serve.md").write_text(report)
    (output_dir / "serve.json").write_text(json.dumps(measured, indent=1) + "\n")
    print(report)


if __name__ == "__main__":
    main()
