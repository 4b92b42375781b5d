"""Which trial runs next, when several processes share a study: claims, the queue of trials, retries.

Every trial is queued (WAITING) before it runs, and a process takes it by moving it to RUNNING,
which exactly one process may do. New trials are queued per claimed slot (slot i of n_trials:
grid point i, or a sampler's pick), so the study never holds more than n_trials, nor a grid point
twice. A trial whose process was killed (its Optuna heartbeat went stale) or interrupted (Ctrl-C,
SIGTERM) is queued again, once, whatever the number of processes.
"""

import contextlib
import os
import re
import threading
import time
import warnings

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

from emo import UserError, first_line
from emo.redact import redact

warnings.filterwarnings("ignore", category=ExperimentalWarning)  # heartbeats: stable in use, "experimental" in name

INTERRUPTED_ATTR = "interrupted"  # on a trial stopped by Ctrl-C or SIGTERM: it runs again


class Claims:
    """Decisions that exactly one process of a study may take, kept in the study's own database.

    A claim is a row whose primary key is (study, what): of processes that insert the same row
    at the same instant the database accepts one, so "who creates the parent run", "who runs
    grid point 3" and "who registers the best model" have one answer whatever the timing.
    """

    def __init__(self, engine, study_name: str):
        self.engine = engine
        self.study_name = study_name
        self.table = sqlalchemy.Table(
            "emo_sweep_claims",
            sqlalchemy.MetaData(),
            sqlalchemy.Column("study_name", sqlalchemy.String(512), primary_key=True),
            sqlalchemy.Column("claim", sqlalchemy.String(128), primary_key=True),
            sqlalchemy.Column("value", sqlalchemy.String(512), nullable=False),
        )
        with contextlib.suppress(
            sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.IntegrityError
        ):
            self.table.create(engine, checkfirst=True)  # another process may create it at the same time

    def claim(self, what: str, value: str = "") -> bool:
        try:
            with self.engine.begin() as connection:
                connection.execute(self.table.insert().values(study_name=self.study_name, claim=what, value=value))
        except sqlalchemy.exc.IntegrityError:
            return False
        return True

    def value(self, what: str) -> str | None:
        query = sqlalchemy.select(self.table.c.value).where(
            self.table.c.study_name == self.study_name, self.table.c.claim == what
        )
        with self.engine.connect() as connection:
            return connection.execute(query).scalar()


def open_storage(url: str, on_stale_trial, heartbeat_s: int, grace_s: int) -> RDBStorage:
    """Optuna's storage with trial heartbeats; a URL that is not a database is one line.

    Processes that create a new database at the same instant race (a lock, a table created twice): they try again.
    """
    for attempt in range(5):
        try:
            return RDBStorage(
                url, heartbeat_interval=heartbeat_s, grace_period=grace_s, heartbeat_stale_trial_callback=on_stale_trial
            )
        except (
            sqlalchemy.exc.OperationalError,
            sqlalchemy.exc.IntegrityError,
            sqlalchemy.exc.ProgrammingError,
        ) as error:
            raced = isinstance(error, sqlalchemy.exc.IntegrityError) or re.search(r"locked|already exists", str(error))
            if attempt == 4 or not raced:
                raise UserError(f"--sweep.storage {redact(url)}: cannot open it ({storage_problem(error)})") from None
            time.sleep(0.5 * (attempt + 1))  # another process created the same tables at the same instant
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as error:
            raise UserError(f"--sweep.storage {redact(url)}: {storage_problem(error)}") from None


def storage_problem(error: Exception) -> str:
    text = first_line(error)
    if isinstance(error, ImportError):
        return "no driver for this database is installed (PostgreSQL: pip install 'psycopg[binary]')"
    if isinstance(error, sqlalchemy.exc.ArgumentError):
        return "not a database URL; give sqlite:///file.db or e.g. postgresql://user@host/db"
    return re.sub(r"^\([\w.]+\) ", "", text)[:200]  # "(sqlite3.DatabaseError) file is not a database" -> the reason


@contextlib.contextmanager
def heartbeat(storage: RDBStorage, trial_id: int):
    """Optuna's trial heartbeat, as `study.optimize` keeps it: a killed process's trial goes stale."""
    stop = threading.Event()

    def beat():
        while True:
            with contextlib.suppress(Exception):  # a missed beat is retried; only a long silence counts
                storage.record_heartbeat(trial_id)
            if stop.wait(storage.get_heartbeat_interval()):
                return

    thread = threading.Thread(target=beat, name=f"optuna-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class TrialQueue:
    """The trials of one study, handed out one at a time to the processes that share it.

    Args:
        storage_url: Optuna storage (an RDB URL) shared by the processes.
        study_name, sampler, pruner, direction: the Optuna study's.
        n_trials: Trials of the whole study, all processes together.
        grid: The grid points in order (empty when a sampler picks the values).
        heartbeat_s, grace_s: A running trial's process beats every `heartbeat_s`; a trial silent for `grace_s`
            (its process was killed, or its machine is gone) is failed and queued again.
    """

    def __init__(
        self,
        storage_url: str,
        study_name: str,
        sampler,
        pruner,
        direction: str,
        n_trials: int,
        grid: list[dict],
        heartbeat_s: int = 30,
        grace_s: int = 120,
    ):
        self.n_trials = n_trials
        self.grid = grid
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=2)
        self.storage = open_storage(storage_url, self.retry_once, heartbeat_s, grace_s)
        self.study = optuna.create_study(
            study_name=study_name,
            storage=self.storage,
            sampler=sampler,
            pruner=pruner,
            direction=direction,
            load_if_exists=True,
        )
        self.study_id = self.storage.get_study_id_from_name(study_name)
        self.claims = Claims(self.storage.engine, study_name)

    def next_trial(self) -> optuna.Trial | None:
        """The next trial this process runs (a stopped one first), or None when every slot is taken."""
        self.requeue_stopped_trials()
        while True:
            trial = self.take_waiting_trial()
            if trial is not None or not self.queue_next_slot():
                return trial

    def take_waiting_trial(self) -> optuna.Trial | None:
        # Optuna's own WAITING -> RUNNING step is atomic on PostgreSQL and MySQL but not on SQLite: claim first.
        # Listed through the study, whose storage caches every trial it reads: a trial another process queued
        # since this one last looked would be unknown to that cache, and its first setting a KeyError.
        for waiting in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if not self.claims.claim(f"take-{waiting.number}", str(os.getpid())):
                continue
            trial_id = self.trial_id(waiting.number)
            self.storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
            return optuna.Trial(self.study, trial_id)
        return None

    def queue_next_slot(self) -> bool:
        for slot in range(self.n_trials):
            if self.claims.claim(f"slot-{slot}", str(os.getpid())):
                self.study.enqueue_trial(self.grid[slot] if self.grid else {})
                return True
        return False

    def retry_once(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Queues a copy of a stopped trial (Optuna's retry callback), once whatever the number of processes."""
        if self.claims.claim(f"retry-{trial.number}", str(os.getpid())):
            self.retry(study, trial)

    def requeue_stopped_trials(self) -> None:
        """Trials of killed processes (stale heartbeat) and interrupted ones run again."""
        fail_stale_trials(self.study)  # calls retry_once for each trial it fails
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            if trial.user_attrs.get(INTERRUPTED_ATTR):
                self.retry_once(self.study, trial)

    def others_running(self) -> bool:
        """Trials that other processes are running (this one runs none when it asks): the study is not done yet."""
        return bool(self.storage.get_all_trials(self.study_id, deepcopy=False, states=(TrialState.RUNNING,)))

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def complete(self) -> bool:
        """Every slot ran to an end that a rerun would not change."""
        trials = self.study.get_trials(deepcopy=False)
        if any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials):
            return False
        retried = {number for t in trials for number in RetryHeartbeatStaleTrialCallback.retry_history(t)}
        settled = [
            t
            for t in trials
            if t.state != TrialState.FAIL or not (t.number in retried or t.user_attrs.get(INTERRUPTED_ATTR))
        ]
        return len(settled) >= self.n_trials
