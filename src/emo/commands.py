"""`emo COMMAND`: the command table. Each command's module is imported only when that command runs, so `emo --help`,
`emo report` and `emo sync` start without torch, Lightning or transformers.

A new command is a function below and a line in COMMANDS.
"""

import sys

from emo import UserError, first_line


def lightning(args: list[str]) -> None:
    from emo.export.predict import exported_version, predict

    exported = exported_version(args)  # `predict --ckpt_path models:/...` naming an ONNX export: no torch
    if exported:
        return predict(args, exported)
    from emo.fit import main

    main(args)


def sweep(args: list[str]) -> None:
    from emo.sweep import main

    main(args)


def audit(args: list[str]) -> None:
    from emo.audit import main

    main(args)


def report(args: list[str]) -> None:
    from emo.report import main

    main(args)


def data(args: list[str]) -> None:
    from emo.data.fetch import main

    main(args)


def export(args: list[str]) -> None:
    from emo.export.command import main

    main(args)


def serve(args: list[str]) -> None:
    from emo.serve.command import main

    main(args)


def sync(args: list[str]) -> None:
    from emo.store.sync import main

    main(args)


COMMANDS = {
    "fit": (lightning, "train, test the best checkpoint, log and register the model"),
    "validate": (lightning, "validate a checkpoint or a registered model (--ckpt_path)"),
    "test": (lightning, "test a checkpoint or a registered model (--ckpt_path)"),
    "predict": (lightning, "label the lines of a text file (--data.predict_file, --ckpt_path)"),
    "sweep": (sweep, "an Optuna study whose trials are fits, nested in MLflow (configs/sweep.yaml)"),
    "audit": (audit, "which training labels are likely wrong: K folds, out-of-fold probabilities, cleanlab"),
    "report": (report, "compare runs, pick the best by validation; --compare A B"),
    "export": (export, "a registered model as ONNX (int8 by default), checked on test, registered as NAME-onnx"),
    "serve": (serve, "a registered model over HTTP (MLflow's scoring protocol), requests batched together (LitServe)"),
    "sync": (sync, "send the records a tracking outage kept in run folders"),
    "data": (data, "put the emotion data in data/emotion: a link to ../shared/data/emotion, else the Hub's, checked"),
}


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
    run, _ = command
    try:
        run(args if run is lightning else args[1:])
    except UserError as error:  # exit status 2 for the command line or a config file (UsageError), else 1
        print(f"emo: error: {first_line(error, limit=None)}", file=sys.stderr)
        sys.exit(error.exit_status)
