"""`emo report`: the runs of an experiment or sweep compared, the best picked by validation; `--compare A B`."""

from emo.report.command import main, report
from emo.report.compare import compare_runs, group_predictions
from emo.report.table import config_columns, load_runs, seed_groups, select_best
from emo.report.write import write_report

__all__ = [
    "compare_runs",
    "config_columns",
    "group_predictions",
    "load_runs",
    "main",
    "report",
    "seed_groups",
    "select_best",
    "write_report",
]
