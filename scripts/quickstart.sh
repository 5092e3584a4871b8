#!/bin/bash
# Quick start on the CPU: synthetic shapes dataset -> train -> evaluate -> export MINDIR -> infer.
# It ends with the val AP and how many val objects the detections drawn (score >= the config's
# eval.draw_thresh) find and name right.
#   [MODEL=centermask_lite] bash scripts/quickstart.sh [key=value ...]   (overrides for every step)
# Environment: MODEL (mask_rcnn; the config is config/shapes/<MODEL>_shapes.yml), PYTHON (python),
# DATA (datasets/shapes), OUT (outputs/shapes_<MODEL>), NUM_TRAIN / NUM_VAL / IMAGE_SIZE (synthetic
# dataset size), STYLE (distinct: classes differ in outline, colour and pattern; outline: in outline
# only), NUM_DRAW (val images eval.py draws beside their ground truth), NUM_INFER (images
# infer.py draws), SCORE_THRESH (the score a detection needs to be drawn; default: the config's
# eval.draw_thresh, 0.5, or 0.3 for centermask_point, whose heatmap peaks score lower).
# A rerun into the same OUT stops at train.py, which never writes over earlier checkpoints: add
# train.overwrite=true to move them aside.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-mask_rcnn}
CONFIG=config/shapes/${MODEL}_shapes.yml
if [ ! -f "$CONFIG" ]; then
    models=$(cd config/shapes && ls -- *_shapes.yml | sed 's/_shapes\.yml$//' | paste -sd ' ')
    echo "quickstart.sh: error: MODEL=$MODEL: there is no $CONFIG (models: $models)" >&2
    exit 1
fi
PYTHON=${PYTHON:-python}
DATA=${DATA:-datasets/shapes}
OUT=${OUT:-outputs/shapes_${MODEL}}
NUM_TRAIN=${NUM_TRAIN:-1000}
NUM_VAL=${NUM_VAL:-50}
IMAGE_SIZE=${IMAGE_SIZE:-256}
STYLE=${STYLE:-distinct}
NUM_DRAW=${NUM_DRAW:-8}
NUM_INFER=${NUM_INFER:-4}
THRESH=()  # SCORE_THRESH for every step after training: drawings, found count, exported JSON
if [ -n "${SCORE_THRESH:-}" ]; then THRESH=("eval.draw_thresh=$SCORE_THRESH"); fi
GRAPH=$OUT/export/${MODEL}_shapes
export GLOG_v=${GLOG_v:-3}
COMMON=(--config "$CONFIG" --device_target CPU --dataset_dir "$DATA")
start=$SECONDS

step() { echo; echo "== $1 ($((SECONDS - start)) s)"; }

step "1/5 synthetic dataset -> $DATA"
if [ -f "$DATA/annotations/instances_val2017.json" ]; then
    echo "already there (delete $DATA to make it again)"
else
    "$PYTHON" scripts/make_synthetic_coco.py --out "$DATA" --num-train "$NUM_TRAIN" \
        --num-val "$NUM_VAL" --image-size "$IMAGE_SIZE" --style "$STYLE"
fi

step "2/5 train $MODEL -> $OUT"
"$PYTHON" train.py "${COMMON[@]}" --output_dir "$OUT" "$@"

step "3/5 evaluate, draw $NUM_DRAW val images -> $OUT/eval"
"$PYTHON" eval.py "${COMMON[@]}" --ckpt_path "$OUT/checkpoints" --output_dir "$OUT/eval" \
    --draw "$NUM_DRAW" "${THRESH[@]}" "$@" | tee "$OUT/eval.log"
# the README's picture, at most 800 px wide: the drawing with the most objects (the busiest scene),
# among those the one whose detection count is nearest to it (chosen by the ground truth first, so
# that the picture is not picked for the model's sake)
first=$(sed -nE 's/^drawn (.+\.png): ([0-9]+) objects, ([0-9]+) detections.*/\2 \3 \1/p' "$OUT/eval.log" \
        | awk '{d = $2 - $1; if (d < 0) d = -d; $2 = d; print}' \
        | sort -k1,1nr -k2,2n -s | head -n 1 | cut -d' ' -f3-)
if [ -n "$first" ]; then
    "$PYTHON" -c 'import sys, cv2
picture = cv2.imread(sys.argv[1])
scale = min(1.0, 800 / picture.shape[1])
if scale < 1.0:
    picture = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
sys.exit(0 if cv2.imwrite(sys.argv[2], picture) else 1)' "$first" "$OUT/quickstart.png"
fi

step "4/5 export MINDIR -> $GRAPH.mindir"
"$PYTHON" export.py "${COMMON[@]}" --ckpt_path "$OUT/checkpoints" --file_format MINDIR \
    --output "$GRAPH" "${THRESH[@]}" "$@"

step "5/5 infer with the exported graph -> $OUT/infer"
rm -rf "$OUT/infer_input" && mkdir -p "$OUT/infer_input"
find "$DATA/val2017" -maxdepth 1 -type f | sort | head -n "$NUM_INFER" \
    | xargs -I{} cp {} "$OUT/infer_input/"
"$PYTHON" infer.py "${COMMON[@]}" --mindir "$GRAPH.mindir" --input "$OUT/infer_input" \
    --output "$OUT/infer" "${THRESH[@]}" "$@" | tee "$OUT/infer.log"

echo
echo "done in $((SECONDS - start)) s ($MODEL):"
echo "  config and log      $OUT/config.yml  $OUT/train.log"
echo "  training curves     $OUT/train_curves.png"
echo "  checkpoints         $OUT/checkpoints/"
echo "  AP (percent)        $OUT/eval/metrics.json   results: $OUT/eval/results.json"
echo "  val drawings        $OUT/eval/drawings/*.png  (ground truth | predictions)"
if [ -f "$OUT/quickstart.png" ]; then
    echo "  README picture      $OUT/quickstart.png"
fi
echo "  exported graph      $GRAPH.mindir (+ .json)"
drawn=$(sed -nE 's/.* with score >= ([0-9.]+) -> .*/\1/p' "$OUT/infer.log")
echo "  drawings, results   $OUT/infer/*.png  $OUT/infer/*.json, score >= $drawn:"
grep -E '^[^ ]+: [0-9]+ detections?$' "$OUT/infer.log" | sed "s|^|    |" || true
echo
echo "val ($MODEL):"
sed -nE 's/^(bbox AP [0-9.]+ +segm AP [0-9.]+).*/  \1/p' "$OUT/eval.log"
sed -nE 's/^(found [0-9]+ of [0-9]+ val objects.*)/  \1/p' "$OUT/eval.log"
