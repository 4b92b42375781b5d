"""`emo fit | validate | test | predict`: the Lightning CLI (`EmoCLI`) as a command, Lightning's refusals in one line.

python -m emo fit --config configs/base.yaml [--config more.yaml] [--optimizer.lr 5e-5]
python -m emo fit ... --ckpt_path last             (continue a killed or interrupted fit, same MLflow run)
python -m emo {validate,test,predict} --config ... --ckpt_path path/to/best.ckpt
python -m emo predict --config ... --ckpt_path models:/NAME@ALIAS   (or models:/NAME/VERSION: a registered model)
"""

import contextlib
import os
import signal
import sys
import traceback

from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from emo import first_line
from emo.arguments import check_config_files
from emo.fit.cli import EmoCLI
from emo.quiet import quiet_libraries


def raised_by_lightning(error: BaseException) -> bool:
    """Lightning checks some trainer settings only when fitting starts, raising ValueError from its own code."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and f"{os.sep}lightning{os.sep}pytorch{os.sep}" in frames[-1].filename


@contextlib.contextmanager
def lightning_errors():
    """Lightning's refusals of settings as one line (exit 1); a clean SIGTERM stop as a shell expects it."""
    try:
        yield
    except MisconfigurationException as error:  # Lightning's name for settings it cannot run with
        print(f"emo: error: {first_line(error)}", file=sys.stderr)
        sys.exit(1)
    except ValueError as error:
        if not raised_by_lightning(error):
            raise
        print(f"emo: error: trainer settings: {first_line(error)}", file=sys.stderr)
        sys.exit(1)
    except SIGTERMException:  # Lightning stopped the fit cleanly
        sys.exit(128 + signal.SIGTERM)


def main(args: list[str]) -> None:
    """`emo SUBCOMMAND ...` for LightningCLI's subcommands: fit, validate, test, predict."""
    quiet_libraries()
    check_config_files(args)
    with lightning_errors():
        EmoCLI(args=args)
