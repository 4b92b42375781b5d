"""`emo fit | validate | test | predict`: the fit's room. The Lightning CLI (`cli`: `EmoCLI`, its parser and its
`checks`), the callbacks that shape training (`last_checkpoint`, `step_seeds`, the run record for a resume: `resume`),
what a fit prepares (`teachers`), and the end of a fit as one sequence (`finish`: `calibration`, `heldout`,
`registration`). Every checkpoint file is read once (`checkpoint_files`). What a run records is `emo.tracking`.
"""

from emo.fit.cli import LOGGER_CLASS, EmoCLI
from emo.fit.command import lightning_errors, main

__all__ = ["LOGGER_CLASS", "EmoCLI", "lightning_errors", "main"]
