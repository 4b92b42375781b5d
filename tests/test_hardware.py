"""The precision a fit gets when the config leaves it to emo, and the GPU check's CPU rehearsal."""

import os
import subprocess
from pathlib import Path

import pytest

from emo import hardware
from emo.fit import EmoCLI
from helpers.data import ROOT


def cpu_flags() -> set[str]:
    return set(Path("/proc/cpuinfo").read_text().split())


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="Linux only")
def test_bf16_detection_agrees_with_the_kernels_cpu_flags():
    assert hardware.cpu_has_fast_bf16() == bool(cpu_flags() & set(hardware.CPU_BF16_FLAGS))


def fit_precision(tiny_model_dir, small_data_dir, *extra: str) -> str:
    cli = EmoCLI(args=["--config", str(ROOT / "configs/base.yaml"), "--config", str(ROOT / "configs/offline.yaml"),
                       "--model.model_name_or_path", str(tiny_model_dir), "--data.data_dir", str(small_data_dir),
                       "--trainer.accelerator", "cpu", *extra], run=False)  # fmt: skip
    assert cli.config.trainer.precision == cli.trainer.precision  # the config (and so MLflow) holds what runs
    return cli.trainer.precision


@pytest.mark.parametrize("fast_bf16", [True, False], ids=["bf16-cpu", "plain-cpu"])
def test_precision_left_to_emo_follows_the_cpu(fast_bf16, monkeypatch, tiny_model_dir, small_data_dir):
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert fit_precision(tiny_model_dir, small_data_dir) == ("bf16-mixed" if fast_bf16 else "32-true")


@pytest.mark.parametrize("forced", ["32-true", "bf16-mixed"])
def test_a_precision_given_is_kept(forced, monkeypatch, tiny_model_dir, small_data_dir):
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: forced == "32-true")  # the other choice
    assert fit_precision(tiny_model_dir, small_data_dir, "--trainer.precision", forced) == forced


def test_gpu_check_rehearses_on_the_cpu(tmp_path, tiny_model_dir, small_data_dir):
    """scripts/gpu_check.sh in its tiny CPU mode: both sides train, test and report."""
    env = {
        **os.environ,
        "TINY": "1",
        "MODEL": str(tiny_model_dir),
        "DATA": str(small_data_dir),
        "OUT": str(tmp_path),
        "PYTHON": str(Path(os.sys.executable)),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
    }
    done = subprocess.run([str(ROOT / "scripts/gpu_check.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    cells = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in done.stdout.splitlines()
        if line.startswith("| ")
    ]
    rows = {row[0]: row[1:] for row in cells[1:]}
    assert set(rows) == {"emo", "Trainer (grouped, bf16)"}
    for wall, speed, accuracy, _ in rows.values():  # accuracy: the share of the 100 test examples right
        assert (
            float(wall) > 0
            and float(speed) > 0
            and float(accuracy) * 100 == pytest.approx(round(float(accuracy) * 100), abs=0.01)
        )
    assert rows["emo"][3] == "1 x cpu"
    assert "emo / Trainer samples/s:" in done.stdout
