"""Whether a run's process is alive, from its heartbeat: the one rule for "this run died".

While an emo process lives, its sender sets the tag `emo.heartbeat` (Unix seconds) every
`emo.heartbeat_interval_s`. A RUNNING run silent for more than five intervals is stale: its
process died. `mark_stale_runs` ends such runs as KILLED (emo fit and emo sweep call it when they
start); a resume refuses a run that is not stale when its journal is on another machine.
"""

import time

from emo.spec import ENDED_BY_TAG, HEARTBEAT_INTERVAL_TAG, HEARTBEAT_TAG

STALE_AFTER_BEATS = 5
DEFAULT_INTERVAL_S = 60


def silence_s(tags: dict, now: float | None = None) -> float | None:
    """Seconds since the run's last heartbeat; None for a run that never beat (not an emo run, or not started)."""
    if HEARTBEAT_TAG not in tags:
        return None
    return (time.time() if now is None else now) - float(tags[HEARTBEAT_TAG])


def is_stale(tags: dict, now: float | None = None) -> bool:
    """The run beat once and has been silent for more than five of its intervals."""
    silent = silence_s(tags, now)
    return silent is not None and silent > STALE_AFTER_BEATS * float(
        tags.get(HEARTBEAT_INTERVAL_TAG, DEFAULT_INTERVAL_S)
    )


def mark_stale_runs(client, experiment_id: str) -> list[str]:
    """Ends RUNNING runs of `experiment_id` whose heartbeat stopped (their process died) as KILLED."""
    stale = []
    now = time.time()
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000):
        if is_stale(run.data.tags, now):
            silent = silence_s(run.data.tags, now)
            client.set_tag(run.info.run_id, ENDED_BY_TAG, f"no heartbeat for {silent:.0f} s: its process died")
            client.set_terminated(run.info.run_id, "KILLED")
            stale.append(run.info.run_id)
    return stale
