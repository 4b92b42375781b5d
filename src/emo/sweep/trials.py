"""A sweep's trial: an ordinary `emo fit` on a complete config, nested under the parent run, pruned by Optuna.

Each trial's config is written to `<default_root_dir>/sweeps/<study>/trial-<n>.yaml` (`emo fit
--config` that file reruns it). An interrupted trial's retry continues its run from its last checkpoint.
"""

import copy
import os
import socket
from pathlib import Path

import optuna
import yaml
from optuna_integration import PyTorchLightningPruningCallback

from emo.fit import EmoCLI
from emo.spec import PARENT_RUN_TAG, STUDY_TAG, TRIAL_STATE_TAG, TRIAL_TAG, WORKER_TAG
from emo.sweep.parent import RUN_ATTR
from emo.sweep.settings import SweepSettings, set_option, suggest


class TrialPruning(PyTorchLightningPruningCallback):
    """Optuna's pruning callback; also notes the trial's MLflow run on the trial as soon as it exists.

    An interrupted trial's copy (queued by `TrialQueue.retry_once`) inherits that note and continues
    the run from its last checkpoint.
    """

    run_id: str | None = None
    logger = None  # the trial's JournalLogger: records an outage kept back are sent before the next trial

    def on_fit_start(self, trainer, pl_module):
        super().on_fit_start(trainer, pl_module)
        self.logger = trainer.logger
        self.run_id = trainer.logger.run_id
        self._trial.set_user_attr(RUN_ATTR, self.run_id)


def trial_config(
    trial: optuna.Trial, settings: SweepSettings, template: dict, parent_run_id: str, folder: Path
) -> Path:
    """The trial's complete training config, written to `folder`: the template with the trial's values."""
    config = copy.deepcopy(template)
    for name, space in settings.params.items():
        set_option(config, name, suggest(trial, name, space))
    logger = config["trainer"]["logger"]["init_args"]
    logger["run_name"] = f"{settings.study_name}-trial-{trial.number}"
    logger["tags"] = {
        **(logger.get("tags") or {}),
        PARENT_RUN_TAG: parent_run_id,
        STUDY_TAG: settings.study_name,
        TRIAL_TAG: str(trial.number),
        WORKER_TAG: f"{socket.gethostname()}:{os.getpid()}",  # which sweep process ran it
    }
    config["registry"]["registered_model_name"] = None  # only the best trial's model, at the end
    interrupted = last_checkpoint_of(
        Path(template["trainer"].get("default_root_dir") or "."), trial.user_attrs.get(RUN_ATTR)
    )
    if interrupted:
        config["ckpt_path"] = str(interrupted)  # the retry of an interrupted trial continues its run
    path = folder / f"trial-{trial.number}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def last_checkpoint_of(root: Path, run_id: str | None) -> Path | None:
    found = sorted(root.glob(f"*/{run_id}/checkpoints/last.ckpt")) if run_id else []
    return found[0] if found else None


def fit_trial(trial: optuna.Trial, config: Path, pruning: TrialPruning, client) -> float:
    """Runs the trial's fit; returns its best validation metric (`pruning`'s). Raises `optuna.TrialPruned` when pruned."""
    try:
        cli = EmoCLI(args=["fit", "--config", str(config)], callbacks=[pruning])
    except SystemExit as stop:  # Lightning exits on Ctrl-C
        raise KeyboardInterrupt(f"trial {trial.number} interrupted") from stop
    except optuna.TrialPruned:
        trial.set_user_attr(RUN_ATTR, pruning.run_id)
        client.set_tag(pruning.run_id, TRIAL_STATE_TAG, "PRUNED")
        client.set_terminated(pruning.run_id, status="KILLED")
        raise
    run_id = cli.trainer.logger.run_id
    trial.set_user_attr(RUN_ATTR, run_id)
    client.set_tag(run_id, TRIAL_STATE_TAG, "COMPLETE")
    return cli.kept_checkpoint.best_model_score.item()
