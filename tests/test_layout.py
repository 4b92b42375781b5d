"""The shape of the code as a researcher changes it: a metric is one line in the spec, commands that do not train
start without torch, a fit starts quietly. (The layer contract itself is `lint-imports`, run by `make test`.)"""

import subprocess
import sys

import mlflow
import pytest

from emo import spec
from emo.fit import EmoCLI
from emo.hardware import cpu_has_fast_bf16
from emo.report.table import load_runs, summary_table
from emo.spec import Metric
from helpers.data import ROOT, shrunk_args
from helpers.processes import run_emo

TRAINING_LIBRARIES = ("torch", "lightning", "transformers", "datasets")


@pytest.mark.parametrize("args", [["--help"], ["report", "--help"], ["sync", "--help"], ["sync", "--root", "{tmp}"],
                                  ["report", "--experiment", "nothing-here"], ["serve", "--help"]], ids=" ".join)  # fmt: skip
def test_commands_that_do_not_train_load_no_training_library(args, tmp_path):
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    probe = (
        "import sys\nfrom emo.commands import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        f"print('loaded:', sorted(name for name in {TRAINING_LIBRARIES!r} if name in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "PATH": ""},
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "loaded: []", done.stdout


def test_adding_a_metric_is_one_line_in_the_spec(tmp_path, tiny_model_dir, small_data_dir, tracking_uri, monkeypatch):
    recall = Metric("recall_macro", "macro recall", "MulticlassRecall", (("average", "macro"),), headline=True)
    monkeypatch.setattr(spec, "METRICS", (*spec.METRICS, recall))
    name = "metric-in-one-place"
    cli = EmoCLI(args=["fit", *shrunk_args(tmp_path, tiny_model_dir, small_data_dir, "--trainer.max_epochs", "1",
                                           "--trainer.logger.init_args.experiment_name", name,
                                           "--registry.registered_model_name", name,
                                           "--checkpoint.monitor", "val/recall_macro")])  # fmt: skip
    client = mlflow.MlflowClient()
    run = client.get_run(cli.trainer.logger.run_id)
    assert client.get_metric_history(run.info.run_id, "val/recall_macro")  # computed by the model, logged
    assert 0 <= run.data.metrics["test/recall_macro"] <= 1
    assert run.data.params["checkpoint.monitor"] == "val/recall_macro"  # a choice of monitor
    assert "macro recall" in run.data.tags["mlflow.note.content"]  # the run's description
    version = client.search_model_versions(f"name='{name}'")[0]
    assert "macro recall" in version.description  # the registered version's
    runs = load_runs(client, name, None)
    assert {"val/recall_macro", "test/recall_macro"} <= set(summary_table(runs, [], "val/recall_macro").columns)


def readme_start_up_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text[text.index("<!-- the start-up lines") :]
    return block[block.index("```text\n") + 8 : block.index("\n```", block.index("```text"))].splitlines()


def test_a_fit_prints_only_what_the_readme_shows_before_training(tmp_path, tiny_model_dir, small_data_dir):
    log = tmp_path / "fit.log"
    args = [
        "fit",
        *shrunk_args(
            tmp_path,
            tiny_model_dir,
            small_data_dir,
            "--trainer.max_epochs",
            "1",
            "--trainer.enable_progress_bar",
            "true",
            "--registry.registered_model_name",
            "quiet",
        ),
    ]
    code, output = run_emo(
        args, log, env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/new-store.db"}
    )  # a new store too
    assert code == 0, output[-3000:]
    output = log.read_bytes().decode()  # as written: a progress bar redraws itself after \r
    before = output[: output.index("┏")].rstrip("\n").split("\n")  # the model summary's table comes next
    data_bars = [line for line in before if line.lstrip("\r").startswith(("Generating ", "Tokenizing"))]  # new data
    expected = [line for line in readme_start_up_lines() if cpu_has_fast_bf16() or "bfloat16" not in line]
    assert [line for line in before if line not in data_bars] == expected
    assert "INFO" not in output and "system metrics" not in output  # nor at the end


TRACKING_DOC = ROOT / "docs/tracking.md"
METRICS_START = "<!-- the metrics of spec.METRICS: tests/test_layout.py checks this table against the spec -->"
METRICS_END = "<!-- end of the metrics -->"


def metrics_table() -> str:
    """The table of docs/tracking.md, from `spec.METRICS` (and the loss every stage logs)."""
    rows = [
        "| logged as | what | computed by | headline |",
        "|---|---|---|---|",
        f"| `<stage>/{spec.LOSS}` | cross-entropy (plain, whatever the training loss) | `torch.nn.functional.cross_entropy` | |",
    ]
    for metric in spec.METRICS:
        name = f"<stage>/{metric.key}_<label>" if metric.per_class else f"<stage>/{metric.key}"
        options = ", ".join(f"{key}={value!r}" for key, value in metric.options)
        what = f"{metric.label} (one per class)" if metric.per_class else metric.label
        rows.append(f"| `{name}` | {what} | `{metric.torchmetric}({options})` | {'yes' if metric.headline else ''} |")
    return "\n".join(rows)


def test_the_metrics_in_docs_are_the_spec_s():
    text = TRACKING_DOC.read_text()
    assert METRICS_START in text and METRICS_END in text
    documented = text.split(METRICS_START, 1)[1].split(METRICS_END, 1)[0].strip()
    assert documented == metrics_table(), f"docs/tracking.md: put this table between its markers:\n{metrics_table()}"


def test_the_wheel_holds_emo_only(tmp_path):
    """What `pip install .` ships: the package, no test helpers and no tests (built from a copy: no build/ left here)."""
    import shutil
    import zipfile

    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [wheel] = tmp_path.glob("emo-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"emo", wheel.name.split("-py")[0] + ".dist-info"}
