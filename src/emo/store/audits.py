"""An `emo audit` run read back: the examples it flagged and the digest of the training split it audited."""

import tempfile

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from emo import UserError
from emo.redact import redact
from emo.spec import AUDIT_TAG, AUDITED_DIGEST_TAG, LABEL_ISSUES_ARTIFACT
from emo.store.registry import RUN_ID


def read_audit(run_id: str, tracking_uri: str) -> tuple[pd.DataFrame, str]:
    """The audit's `label_issues.csv` (index, text, given, suggested, score) and the digest of what it audited; one
    line naming the problem when `run_id` is no finished audit."""
    what = f"--data.audit_run {run_id}"
    if not RUN_ID.fullmatch(run_id or ""):
        raise UserError(f"{what}: give the id of an emo audit's run (32 hex digits)")
    client = mlflow.MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UserError(f"{what}: no run with this id in {redact(tracking_uri)}") from None
    if AUDIT_TAG not in run.data.tags:
        raise UserError(f"{what}: run {run.info.run_name!r} is not an emo audit (it has no {AUDIT_TAG} tag)")
    if AUDITED_DIGEST_TAG not in run.data.tags or run.info.status != "FINISHED":
        raise UserError(f"{what}: audit {run.info.run_name!r} has not finished (rerun `emo audit` to complete it)")
    with tempfile.TemporaryDirectory() as folder:
        issues = pd.read_csv(client.download_artifacts(run_id, LABEL_ISSUES_ARTIFACT, folder), keep_default_na=False)
    return issues, run.data.tags[AUDITED_DIGEST_TAG]
