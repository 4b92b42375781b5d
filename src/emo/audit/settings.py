"""An audit's settings: the `audit:` section of `emo audit` (the training options are `emo fit`'s)."""

from jsonargparse.typing import PositiveFloat, PositiveInt

from emo.audit.data_issues import NEAR_DUPLICATE_THRESHOLD


class AuditSettings:
    """The `audit:` section.

    Args:
        folds: Stratified folds of the training split; each is predicted by a fit on the others (at least 2).
        seed: The seed of the folds' deal.
        name: The audit's Optuna study and MLflow parent run; rerunning with the same name continues it.
        storage: Optuna storage (an RDB URL) that processes sharing the folds share.
        trial_heartbeat_s: A process fitting a fold says so this often.
        trial_grace_s: A fold whose process has been silent this long runs again in another process.
        near_duplicate_threshold: Two texts are near-duplicates when the distance of their fold models' features is
            below this share of the median distance of a text to its nearest neighbour (cleanlab's Datalab).
    """

    def __init__(
        self,
        folds: int = 5,
        seed: int = 0,
        name: str = "audit",
        storage: str = "sqlite:///optuna.db",
        trial_heartbeat_s: PositiveInt = 30,
        trial_grace_s: PositiveInt = 120,
        near_duplicate_threshold: PositiveFloat = NEAR_DUPLICATE_THRESHOLD,
    ):
        self.folds = folds
        self.seed = seed
        self.name = name
        self.storage = storage
        self.trial_heartbeat_s = trial_heartbeat_s
        self.trial_grace_s = trial_grace_s
        self.near_duplicate_threshold = near_duplicate_threshold
