"""What a sweep learnt: how much each swept setting mattered (Optuna's PED-ANOVA importances), the trials on parallel
coordinates, and the optimisation history; where importances mean nothing, one line says why.

Written by the sweep's parent run when its study is complete (`emo.sweep.parent`), read back by `emo report --sweep`.
PED-ANOVA is Optuna's own evaluator (its default from Optuna 5) and needs only numpy; fANOVA would need scikit-learn.
"""

import json
import shutil
import tempfile
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # Optuna draws its plots with pyplot: files only, no display (emo's own figures need no backend)

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from optuna.visualization import matplotlib as optuna_plots  # noqa: E402

from emo.spec import (  # noqa: E402
    OPTIMIZATION_HISTORY_ARTIFACT,
    PARALLEL_COORDINATE_ARTIFACT,
    PARAM_IMPORTANCES_ARTIFACTS,
    SWEEP_ANALYSIS_ARTIFACTS,
)

MIN_TRIALS = 3  # finished trials below which importances are noise
# The files' names in the folder logged as the parent run's `spec.SWEEP_ANALYSIS_ARTIFACTS`.
IMPORTANCES, MARKDOWN, PICTURE = (Path(path).name for path in PARAM_IMPORTANCES_ARTIFACTS)
PARALLEL_COORDINATE, HISTORY = Path(PARALLEL_COORDINATE_ARTIFACT).name, Path(OPTIMIZATION_HISTORY_ARTIFACT).name


def finished_trials(study: optuna.Study) -> list:
    return study.get_trials(deepcopy=False, states=[TrialState.COMPLETE])


def importance_problem(study: optuna.Study) -> str | None:
    """Why a study's importances cannot be computed, in one line; None when they can."""
    finished = finished_trials(study)
    settings = sorted({name for trial in finished for name in trial.params})
    if len(settings) == 1:
        return f"one swept setting ({settings[0]}): importances rank two or more against each other"
    if len(finished) < MIN_TRIALS:
        return f"{len(finished)} finished trial{'s' * (len(finished) != 1)}: importances need at least {MIN_TRIALS}"
    if len({trial.value for trial in finished}) == 1:
        return f"all {len(finished)} finished trials scored the same: no setting made a difference to tell"
    return None


def param_importances(study: optuna.Study) -> dict[str, float]:
    """Each swept setting's share of the importance (they sum to 1), most important first."""
    return get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())


def importances_markdown(record: dict) -> str:
    """The importances as a table, or the line saying why there are none."""
    if "importances" not in record:
        return f"No parameter importances: {record['reason']}.\n"
    lines = [
        f"Parameter importances of {record['metric']} over {record['finished_trials']} finished trials "
        f"({record['evaluator']}, summing to 1):\n",
        "| setting | importance |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value:.3f} |" for name, value in record["importances"].items()]
    return "\n".join(lines) + "\n"


def importances_lines(record: dict) -> list[str]:
    """The importances for a terminal: a line each, or one line why there are none."""
    if "importances" not in record:
        return [f"parameter importances: none: {record['reason']}"]
    width = max(len(name) for name in record["importances"])
    head = f"parameter importances of {record['metric']} ({record['evaluator']}, {record['finished_trials']} finished trials):"
    return [head, *(f"  {name:<{width}}  {value:.3f}" for name, value in record["importances"].items())]


def save_plot(axes, path: Path) -> None:
    figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure  # one Axes, or an array of them
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_sweep_analysis(study: optuna.Study, folder: Path, metric: str) -> dict:
    """Writes the importances (json, md and, when computed, png), the parallel coordinates and the optimisation
    history of the finished trials into `folder`; returns the json's content."""
    folder.mkdir(parents=True, exist_ok=True)
    finished = finished_trials(study)
    record = {"metric": metric, "direction": study.direction.name.lower(), "finished_trials": len(finished)}
    problem = importance_problem(study)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", optuna.exceptions.ExperimentalWarning
        )  # Optuna's matplotlib plots are so marked
        warnings.filterwarnings("ignore", "Attempting to set identical low and high")  # a setting of one value so far
        if problem:
            record["reason"] = problem
        else:
            record["evaluator"] = "PED-ANOVA"
            record["importances"] = param_importances(study)
            axes = optuna_plots.plot_param_importances(
                study, evaluator=PedAnovaImportanceEvaluator(), target_name=metric
            )
            save_plot(axes, folder / PICTURE)
        if finished:
            save_plot(optuna_plots.plot_parallel_coordinate(study, target_name=metric), folder / PARALLEL_COORDINATE)
            save_plot(optuna_plots.plot_optimization_history(study, target_name=metric), folder / HISTORY)
    (folder / IMPORTANCES).write_text(json.dumps(record, indent=2) + "\n")
    (folder / MARKDOWN).write_text(importances_markdown(record))
    return record


def logged_sweep_analysis(client, parent_run_id: str, folder: Path) -> dict | None:
    """What a sweep's parent run logged by `write_sweep_analysis`, its pictures copied into `folder`; None before
    its study was complete (or from before emo logged it)."""
    logged = {artifact.path for artifact in client.list_artifacts(parent_run_id, SWEEP_ANALYSIS_ARTIFACTS)}
    if PARAM_IMPORTANCES_ARTIFACTS[0] not in logged:
        return None
    with tempfile.TemporaryDirectory() as downloads:
        record = json.loads(
            Path(client.download_artifacts(parent_run_id, PARAM_IMPORTANCES_ARTIFACTS[0], downloads)).read_text()
        )
        pictures = [PARALLEL_COORDINATE_ARTIFACT, OPTIMIZATION_HISTORY_ARTIFACT]
        pictures += [PARAM_IMPORTANCES_ARTIFACTS[2]] if "importances" in record else []  # not one of fewer trials
        for path in pictures:
            if path in logged:
                shutil.copy(client.download_artifacts(parent_run_id, path, downloads), folder / Path(path).name)
    return record


def sweep_analysis_markdown(record: dict, folder: Path) -> str:
    """The report's section: the importances (or why none) and the pictures that are in `folder`."""
    text = ["\n## What the sweep learnt\n", importances_markdown(record)]
    for name, title in (
        (PICTURE, "importances"),
        (PARALLEL_COORDINATE, "parallel coordinates"),
        (HISTORY, "optimisation history"),
    ):
        if (folder / name).is_file():
            text.append(f"\n![{title}]({name})\n")
    return "\n".join(text)
