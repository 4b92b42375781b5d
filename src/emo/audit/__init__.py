"""`emo audit`: which training labels are likely wrong (confident learning on out-of-fold probabilities), its folds
shared like a sweep's trials."""

from emo.audit.command import AuditCLI, main
from emo.audit.issues import label_issues, noise_matrix
from emo.audit.settings import AuditSettings

__all__ = ["AuditCLI", "AuditSettings", "label_issues", "main", "noise_matrix"]
