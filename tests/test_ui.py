"""The MLflow UI, in a real headless browser (Debian's chromium), opens a real run in the Model training view."""

import os
import re
import shutil
import subprocess

import pytest

from emo.fit import EmoCLI
from emo.store import ui_url
from helpers.data import one_epoch_named, shrunk_args

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# As the probe of this machine kind starts it: no sandbox as root, and no calls to Google's services.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--virtual-time-budget=20000"]  # fmt: skip


def page_text(url: str, profile) -> str:
    """The page's text once its JavaScript has run (a new browser profile: no memory of an earlier view)."""
    done = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url], capture_output=True, text=True, timeout=120
    )
    return re.sub(r"<[^>]+>", "\n", done.stdout)


@pytest.mark.skipif(
    not CHROMIUM and not os.environ.get("EMO_CI"), reason="no chromium (.ci/run installs it; in CI this fails)"
)
def test_the_printed_url_opens_the_run_in_the_model_training_view(
    tmp_path, tiny_model_dir, small_data_dir, tracking_uri
):
    assert CHROMIUM, "chromium is not installed (Debian's package chromium)"
    name = "ui-test"
    cli = EmoCLI(
        args=[
            "fit",
            *shrunk_args(
                tmp_path,
                tiny_model_dir,
                small_data_dir,
                *one_epoch_named(name, ""),
            ),
        ]
    )
    run_name = cli.trainer.logger._run_name
    url = ui_url(tracking_uri, tracking_uri, name)
    assert url.endswith("/runs?workflowType=machine_learning")
    lines = {line.strip() for line in page_text(url, tmp_path / "profile").splitlines()}
    assert run_name in lines  # the run, in the runs table
    assert "Model registry" in lines and "Judges" not in lines  # the Model training view's menu, not GenAI's
    # Without the view in the URL, a fresh browser opens GenAI: the test can tell the two apart.
    bare = {line.strip() for line in page_text(url.split("?")[0], tmp_path / "fresh").splitlines()}
    assert "Judges" in bare
