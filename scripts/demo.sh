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

if [[ -n "$ARCHIVE" ]]; then
  # Kept apart from the sample's folders, so neither run reuses the other's dataset.
  MANUAL="$DEMO_DIR/real/manual" TFDS="$DEMO_DIR/real/tfds" JOB="$DEMO_DIR/real/job"
  # ~11,000 training photos: cap the epochs so the demo stays a demo on a CPU.
  TRAIN_FLAGS=(--steps_per_epoch=25)
  [[ -f "$ARCHIVE" ]] || { echo "error: ARCHIVE=$ARCHIVE is not a file" >&2; exit 2; }
  step "Using the real archive $ARCHIVE"
  mkdir -p "$MANUAL"
  ln -sf "$(realpath "$ARCHIVE")" "$MANUAL/oregon-wildlife.zip"
else
  MANUAL="$DEMO_DIR/manual" TFDS="$DEMO_DIR/tfds" JOB="$DEMO_DIR/job"
  TRAIN_FLAGS=()
  step "Generating a sample archive in the exact Kaggle layout (SYNTHETIC images, $PER_CLASS per class)"
  mkdir -p "$MANUAL"
  "$PY" -m tfds_oregon.sample --out "$MANUAL/oregon-wildlife.zip" \
    --per_class "$PER_CLASS" --size 320x240
fi

step "Building the oregon_wildlife/resized_256 dataset"
"$PY" -m tfds_oregon.build --manual_dir "$MANUAL" --data_dir "$TFDS" --config resized_256

step "Creating the offline stand-in backbone (UNTRAINED MobileNet V2, TF Hub feature-vector format)"
# A real run uses the TF Hub handle (the default --backbone); this machine may have no network.
if [[ ! -d "$DEMO_DIR/backbone" ]]; then
  "$PY" -m trainer.standin_backbone --out "$DEMO_DIR/backbone" --alpha 0.35 --image_size 128
fi

step "Training: python -m trainer.task (1 head-only epoch, then 7 fine-tuning epochs, CPU)"
# Re-running resumes from the checkpoints in $JOB (and redoes nothing that finished).
"$PY" -m trainer.task --flagfile=trainer/flagfiles/demo_cpu.cfg \
  --data_dir="$TFDS" --job_dir="$JOB" --backbone="$DEMO_DIR/backbone" "${TRAIN_FLAGS[@]}"

step "Predicting a real photo with the exported SavedModel (untrained backbone: expect a guess)"
"$PY" -m trainer.predict --model_dir "$JOB/model" --top_k 3 tests/data/real/red_fox.jpg

step "Done. Outputs in $JOB: metrics.json, confusion_matrix.png, predictions.png, model/"
