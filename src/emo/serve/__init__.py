"""emo serve: a registered model over HTTP on LitServe, with dynamic batching: contract.py (what a request may hold),
protocol.py (the HTTP side: /invocations, /ping, /version), worker.py (the inference side: batches to
probabilities), model.py (what the worker loads; torch_model.py for a torch version), server.py (the processes,
SIGTERM), command.py (resolve, download, then become the server)."""
