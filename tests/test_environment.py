"""The suite depends on nothing in the caller's shell (conftest.py clears HF_*, MLFLOW_* and TRANSFORMERS_*)."""

import os
import subprocess
import sys

from helpers.data import ROOT

SHELL = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_ENDPOINT": "http://127.0.0.1:9",
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
}


def test_tests_pass_in_a_shell_that_set_hugging_face_and_mlflow_variables():
    """`make test` in a shell with HF_HUB_OFFLINE=1 (and MLflow pointed elsewhere) runs as in a clean one."""
    tests = ["tests/test_cli.py::test_unreachable_hub_fails_fast_with_one_line", "tests/test_redact.py"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=ROOT,
        env={**os.environ, **SHELL},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_no_caller_s_setting_is_left_in_this_process():
    assert not [name for name in os.environ if name.startswith(("HF_", "HUGGING_FACE_", "TRANSFORMERS_"))]
