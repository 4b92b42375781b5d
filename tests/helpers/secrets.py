"""Where a secret could end up once emo has run: every file under a folder (checkpoints opened, as zip archives),
every param, tag and artifact of a run, its registered versions, and what emo printed."""

import zipfile
from pathlib import Path

import mlflow


def file_texts(root: Path) -> list[tuple[str, str]]:
    """(where, content) of every file under `root`, read as bytes; the members of zip archives (checkpoints) too."""
    found = []
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        found.append((str(path), path.read_bytes().decode("latin-1")))
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                found += [(f"{path}/{n}", archive.read(n).decode("latin-1")) for n in archive.namelist()]
    return found


def run_texts(client, run, folder: Path) -> list[tuple[str, str]]:
    """(where, content) of every param, tag and artifact of a run, and of its registered versions and their files."""
    found = [(f"param {k}", f"{k}={v}") for k, v in run.data.params.items()]
    found += [(f"tag {k}", f"{k}={v}") for k, v in run.data.tags.items()]
    found += [("run name", run.info.run_name or "")]
    mlflow.set_tracking_uri(client.tracking_uri)  # models:/ URIs resolve through the global store
    folder = Path(folder) / run.info.run_id
    if client.list_artifacts(run.info.run_id):
        found += file_texts(
            Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(folder / "run")))
        )
    for version in client.search_model_versions(f"run_id='{run.info.run_id}'"):
        found += [(f"version tag {k}", v) for k, v in version.tags.items()] + [("version", version.description or "")]
        model = mlflow.artifacts.download_artifacts(
            f"models:/{version.name}/{version.version}", dst_path=str(folder / "model")
        )
        found += file_texts(Path(model))
    return found


def leaks(secrets: dict[str, str], places: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(where, the secret's name) for every secret found in a place."""
    return [(where, name) for where, text in places for name, secret in secrets.items() if secret in text]
