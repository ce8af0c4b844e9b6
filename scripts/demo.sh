#!/usr/bin/env bash
# `make demo`: the main job end to end on this machine, in a few minutes on 2 CPU cores.
#   sample archive (synthetic images, unless ARCHIVE is given) -> TFDS dataset -> short
#   training run with a local untrained backbone -> evaluation, figures, export -> predict.
# Everything lands in $DEMO_DIR (default runs/demo/).
set -euo pipefail

PY=${PY:-.venv/bin/python}
DEMO_DIR=${DEMO_DIR:-runs/demo}
PER_CLASS=${PER_CLASS:-12}
ARCHIVE=${ARCHIVE:-}

step() { printf '\n==> %s\n' "$*"; }

mkdir -p "$DEMO_DIR/manual"
if [[ -n "$ARCHIVE" ]]; then
  step "Using the real archive $ARCHIVE"
  ln -sf "$(realpath "$ARCHIVE")" "$DEMO_DIR/manual/$(basename "$ARCHIVE")"
else
  step "Generating a sample archive in the exact Kaggle layout (SYNTHETIC images, $PER_CLASS per class)"
  "$PY" -m tfds_oregon.sample --out "$DEMO_DIR/manual/oregon-wildlife.zip" \
    --per_class "$PER_CLASS" --size 320x240
fi

step "Building the oregon_wildlife/resized_256 dataset"
"$PY" -m tfds_oregon.build --manual_dir "$DEMO_DIR/manual" --data_dir "$DEMO_DIR/tfds" \
  --config resized_256
