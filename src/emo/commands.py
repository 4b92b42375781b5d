"""`emo COMMAND`: the command table. Each command is a module with `main(args)`, imported only when that command
runs, so `emo --help`, `emo report` and `emo sync` start without torch, Lightning or transformers.

A new command is a module with `main` and a line in COMMANDS.
"""

import importlib
import sys

from emo import UserError, first_line

COMMANDS = {  # name: (the module whose `main` runs it, what it does)
    "fit": ("emo.fit", "train, test the best checkpoint, log and register the model"),
    "validate": ("emo.fit", "validate a checkpoint or a registered model (--ckpt_path)"),
    "test": ("emo.fit", "test a checkpoint or a registered model (--ckpt_path)"),
    "predict": ("emo.export.predict", "label the lines of a text file (--data.predict_file, --ckpt_path)"),
    "sweep": ("emo.sweep", "an Optuna study whose trials are fits, nested in MLflow (configs/sweep.yaml)"),
    "audit": ("emo.audit", "which training labels are likely wrong: K folds, out-of-fold probabilities, cleanlab"),
    "report": ("emo.report", "compare runs, pick the best by validation; --compare A B"),
    "export": (
        "emo.export.command",
        "a registered model as ONNX (int8 by default), checked on test, registered as NAME-onnx",
    ),
    "serve": (
        "emo.serve.command",
        "a registered model over HTTP (MLflow's scoring protocol), requests batched together (LitServe)",
    ),
    "sync": ("emo.store.sync", "send the records a tracking outage kept in run folders"),
    "data": (
        "emo.data.fetch",
        "put the emotion data in data/emotion: a link to ../shared/data/emotion, else the Hub's, checked",
    ),
}
LIGHTNING_VERBS = ("fit", "validate", "test", "predict")  # LightningCLI's subcommands: their `main` takes the verb too


def usage() -> str:
    lines = ["usage: emo COMMAND [--config FILE ...] [OPTIONS]   (emo COMMAND --help lists a command's options)", ""]
    lines += [f"  {name:<9} {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(args: list[str] | None = None) -> None:
    args = sys.argv[1:] if args is None else list(args)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        sys.exit(0 if args else 2)
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"emo: error: unknown command {args[0]!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    from emo.store.uri import use_mlflow_defaults  # MLflow loads here, once a command that uses it is chosen

    use_mlflow_defaults()
    module, _ = command
    try:
        importlib.import_module(module).main(args if args[0] in LIGHTNING_VERBS else args[1:])
    except UserError as error:  # exit status 2 for the command line or a config file (UsageError), else 1
        print(f"emo: error: {first_line(error, limit=None)}", file=sys.stderr)
        sys.exit(error.exit_status)
