"""Planted label noise: flip a known, random share of a training split's labels, then score an audit against it.

    python -m scripts.planted_noise plant --data_dir data/emotion --out outputs/planted --share 0.05 --seed 0
    python -m emo audit --config configs/base.yaml --config configs/offline.yaml --data.data_dir outputs/planted ...
    python -m scripts.planted_noise score --flips outputs/planted/flips.csv --audit AUDIT_RUN_ID

`plant` copies the three split files of a CARER-format folder (`text;label` lines), each flipped
training example given another class drawn uniformly, and writes `flips.csv` (index, text, true,
planted). `score` prints the recall and precision of the audit's flagged examples against the flips.
"""

import argparse
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from emo.store import read_audit, resolve_tracking_uri


def plant(data_dir: Path, out: Path, share: float, seed: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in ("val.txt", "test.txt"):
        shutil.copyfile(data_dir / name, out / name)
    lines = (data_dir / "train.txt").read_text(encoding="utf-8").splitlines()
    texts, labels = zip(*(line.rsplit(";", 1) for line in lines), strict=True)
    names = sorted(set(labels))
    generator = np.random.default_rng(seed)
    flipped = np.sort(generator.choice(len(lines), size=round(share * len(lines)), replace=False))
    planted = list(labels)
    for i in flipped:
        planted[i] = generator.choice([name for name in names if name != labels[i]])
    (out / "train.txt").write_text(
        "".join(f"{t};{label}\n" for t, label in zip(texts, planted, strict=True)), encoding="utf-8"
    )
    pd.DataFrame(
        {
            "index": flipped,
            "text": [texts[i] for i in flipped],
            "true": [labels[i] for i in flipped],
            "planted": [planted[i] for i in flipped],
        }
    ).to_csv(out / "flips.csv", index=False)
    print(f"{len(flipped)} of {len(lines)} training labels flipped ({share:.0%}): {out}")


def score(flips: Path, audit: str) -> dict:
    planted = set(pd.read_csv(flips)["index"])
    issues, _ = read_audit(audit, resolve_tracking_uri())
    flagged = set(issues["index"])
    found = planted & flagged
    result = {
        "planted": len(planted),
        "flagged": len(flagged),
        "found": len(found),
        "recall": len(found) / len(planted),
        "precision": len(found) / max(len(flagged), 1),
    }
    corrected = issues[issues["index"].isin(planted)].merge(pd.read_csv(flips), on="index")
    result["suggested_is_true"] = float((corrected["suggested"] == corrected["true"]).mean()) if len(corrected) else 0.0
    print(
        " ".join(
            f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}" for key, value in result.items()
        )
    )
    mlflow.MlflowClient(resolve_tracking_uri()).log_dict(audit, result, "audit/planted_noise_score.json")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    planting = commands.add_parser("plant")
    planting.add_argument("--data_dir", type=Path, default=Path("data/emotion"))
    planting.add_argument("--out", type=Path, required=True)
    planting.add_argument("--share", type=float, default=0.05)
    planting.add_argument("--seed", type=int, default=0)
    scoring = commands.add_parser("score")
    scoring.add_argument("--flips", type=Path, required=True)
    scoring.add_argument("--audit", required=True)
    args = parser.parse_args()
    if args.command == "plant":
        plant(args.data_dir, args.out, args.share, args.seed)
    else:
        score(args.flips, args.audit)


if __name__ == "__main__":
    main()
