#!/bin/bash
# Quick start on the CPU: synthetic shapes dataset -> train -> evaluate -> export MINDIR -> infer.
#   bash scripts/quickstart.sh [key=value ...]     (config overrides, given to every step)
# Environment: PYTHON (default python), DATA (datasets/shapes), OUT (outputs/shapes_mask_rcnn),
# NUM_TRAIN / NUM_VAL / IMAGE_SIZE (synthetic dataset size), NUM_INFER (images drawn by infer.py),
# SCORE_THRESH (infer.py's, default 0.5). A rerun into the same OUT stops at train.py, which
# never writes over earlier checkpoints: add train.overwrite=true to move them aside.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
CONFIG=config/shapes/mask_rcnn_shapes.yml
DATA=${DATA:-datasets/shapes}
OUT=${OUT:-outputs/shapes_mask_rcnn}
NUM_TRAIN=${NUM_TRAIN:-200}
NUM_VAL=${NUM_VAL:-50}
IMAGE_SIZE=${IMAGE_SIZE:-256}
NUM_INFER=${NUM_INFER:-4}
SCORE_THRESH=${SCORE_THRESH:-0.5}
export GLOG_v=${GLOG_v:-3}
COMMON=(--config "$CONFIG" --device_target CPU --dataset_dir "$DATA")
start=$SECONDS

step() { echo; echo "== $1 ($((SECONDS - start)) s)"; }

step "1/5 synthetic dataset -> $DATA"
if [ -f "$DATA/annotations/instances_val2017.json" ]; then
    echo "already there (delete $DATA to make it again)"
else
    "$PYTHON" scripts/make_synthetic_coco.py --out "$DATA" --num-train "$NUM_TRAIN" \
        --num-val "$NUM_VAL" --image-size "$IMAGE_SIZE"
fi

step "2/5 train -> $OUT"
"$PYTHON" train.py "${COMMON[@]}" --output_dir "$OUT" "$@"

step "3/5 evaluate -> $OUT/eval"
"$PYTHON" eval.py "${COMMON[@]}" --ckpt_path "$OUT/checkpoints" --output_dir "$OUT/eval" "$@"

step "4/5 export MINDIR -> $OUT/export"
"$PYTHON" export.py "${COMMON[@]}" --ckpt_path "$OUT/checkpoints" --file_format MINDIR \
    --output "$OUT/export/mask_rcnn_shapes" "$@"

step "5/5 infer with the exported graph -> $OUT/infer"
rm -rf "$OUT/infer_input" && mkdir -p "$OUT/infer_input"
find "$DATA/val2017" -maxdepth 1 -type f | sort | head -n "$NUM_INFER" \
    | xargs -I{} cp {} "$OUT/infer_input/"
"$PYTHON" infer.py "${COMMON[@]}" --mindir "$OUT/export/mask_rcnn_shapes.mindir" \
    --input "$OUT/infer_input" --output "$OUT/infer" --score_thresh "$SCORE_THRESH" "$@"

echo
echo "done in $((SECONDS - start)) s:"
echo "  config and log      $OUT/config.yml  $OUT/train.log"
echo "  checkpoints         $OUT/checkpoints/"
echo "  AP (percent)        $OUT/eval/metrics.json   results: $OUT/eval/results.json"
echo "  exported graph      $OUT/export/mask_rcnn_shapes.mindir (+ .json)"
echo "  drawings, results   $OUT/infer/*.png  $OUT/infer/*.json"
