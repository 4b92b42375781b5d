#!/usr/bin/env bash
# One GPU, side by side, in one go: a full 3-epoch offline fit of MiniLM with emo (its defaults on a
# CUDA machine: bf16-mixed, TF32), then the length-grouped bf16 Trainer with the same model, data,
# batch size and learning rate. Prints wall time, samples/s and test accuracy of each.
#
#   scripts/gpu_check.sh                 # on a machine with a GPU, after `make install`
#   TINY=1 MODEL=... DATA=... scripts/gpu_check.sh   # CPU rehearsal with a tiny model (the test suite's)
#
# Needs what `make install` installs (emo uses MLflow and datasets; the Trainer peer only torch,
# transformers and torchmetrics). Runs are recorded in $OUT/mlflow.db unless MLFLOW_TRACKING_URI is set.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
MODEL=${MODEL:-models/all-MiniLM-L6-v2}
DATA=${DATA:-data/emotion}   # make data
OUT=${OUT:-$(mktemp -d -t gpu_check.XXXX)}
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$OUT/mlflow.db}

if [[ ${TINY:-0} == 1 ]]; then
  ACCELERATOR=cpu
  EMO_EXTRA=(--trainer.max_epochs 1 --data.eval_batch_size 50 --trainer.log_every_n_steps 5)
  PEER_EXTRA=(--epochs 1 --train-size 200 --test-size 100)
else
  ACCELERATOR=gpu
  EMO_EXTRA=()
  PEER_EXTRA=(--epochs 3)
fi

now() { date +%s%3N; }  # milliseconds
started=$(now)
"$PY" -m emo fit --config configs/base.yaml --config configs/offline.yaml \
  --model.model_name_or_path "$MODEL" --data.data_dir "$DATA" --trainer.accelerator "$ACCELERATOR" \
  --trainer.default_root_dir "$OUT/emo" --trainer.enable_progress_bar false "${EMO_EXTRA[@]}" > "$OUT/emo.log" 2>&1 \
  || { tail -20 "$OUT/emo.log"; exit 1; }
emo_wall=$(( $(now) - started ))

started=$(now)
"$PY" scripts/trainer_peer.py --model "$MODEL" --data "$DATA" --output-dir "$OUT/peer" \
  --bf16 --group-by-length --lr 1e-4 --warmup-ratio 0.1 --evaluate "${PEER_EXTRA[@]}" > "$OUT/peer.json" 2> "$OUT/peer.log" \
  || { tail -20 "$OUT/peer.log"; exit 1; }
peer_wall=$(( $(now) - started ))

"$PY" - "$OUT" "$emo_wall" "$peer_wall" <<'PYTHON'
import json, sys
from pathlib import Path
out, emo_wall, peer_wall = Path(sys.argv[1]), int(sys.argv[2]) / 1000, int(sys.argv[3]) / 1000
emo = json.loads(next((out / "emo").rglob("summary.json")).read_text())
peer = json.loads((out / "peer.json").read_text().splitlines()[-1])
rows = [("emo", emo_wall, emo["train_samples_per_sec"], emo["test"]["test/acc"], emo["devices"]),
        ("Trainer (grouped, bf16)", peer_wall, peer["samples_per_sec"], peer["test_acc"], peer["device"])]
print("| run | wall s | samples/s | test acc | devices |\n|---|---|---|---|---|")
for name, wall, speed, acc, devices in rows:
    print(f"| {name} | {wall:.1f} | {speed:.1f} | {acc:.4f} | {devices} |")
print(f"emo / Trainer samples/s: {emo['train_samples_per_sec'] / peer['samples_per_sec']:.2f}")
PYTHON
