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

step "Creating the offline stand-in backbone (UNTRAINED MobileNet V2, TF Hub feature-vector format)"
# A real run uses the TF Hub handle (the default --backbone); this machine may have no network.
if [[ ! -d "$DEMO_DIR/backbone" ]]; then
  "$PY" -m trainer.backbones --out "$DEMO_DIR/backbone" --alpha 0.35 --image_size 128
fi

step "Training: python -m trainer.task (1 head-only epoch, then 7 fine-tuning epochs, CPU)"
# Re-running resumes from the checkpoints in $DEMO_DIR/job (and redoes nothing that finished).
"$PY" -m trainer.task --flagfile=trainer/flagfiles/demo_cpu.cfg \
  --data_dir="$DEMO_DIR/tfds" --job_dir="$DEMO_DIR/job" --backbone="$DEMO_DIR/backbone"

step "Predicting a real photo with the exported SavedModel (untrained backbone: expect a guess)"
"$PY" -m trainer.predict --model_dir "$DEMO_DIR/job/model" --top_k 3 tests/data/real/red_fox.jpg

step "Done. Outputs in $DEMO_DIR/job: metrics.json, confusion_matrix.png, predictions.png, model/"
