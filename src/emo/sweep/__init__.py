"""`emo sweep`: an Optuna study whose trials are ordinary `emo fit` runs, nested in MLflow; processes that share
its storage share its trials."""

from emo.sweep.command import StudyCLI, Sweep, SweepCLI, main
from emo.sweep.parent import RUN_ATTR, ParentRun, SweepParent
from emo.sweep.queue import Claims, TrialQueue
from emo.sweep.settings import Range, SweepSettings, suggest

__all__ = [
    "RUN_ATTR",
    "Claims",
    "ParentRun",
    "Range",
    "StudyCLI",
    "Sweep",
    "SweepCLI",
    "SweepParent",
    "SweepSettings",
    "TrialQueue",
    "main",
    "suggest",
]
