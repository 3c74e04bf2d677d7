#!/usr/bin/env bash
# The demo pipeline on Fashion-MNIST, end to end (called by `./run demo` after setup).
# Every stage is skipped when its output is already complete; BOWSVM_DEMO_FRESH=1 starts over.
# Options come from the environment:
#   BOWSVM_DEMO_OUT   output folder (default demo-out)
#   BOWSVM_MASTER     Spark master (default local[*])
#   BOWSVM_DEMO_SETS  feature sets (presets) to build (default: the three chosen on val, see
#                     docs/BENCHMARKS.md "End to end")
#   BOWSVM_DEMO_LIMIT images per class and split, for a quick run (default: all)
set -euo pipefail
OUT=${BOWSVM_DEMO_OUT:-demo-out}
MASTER=${BOWSVM_MASTER:-local[*]}
SETS=${BOWSVM_DEMO_SETS:-fmnist-lcc-hog-spm7 fmnist-sv-hoglbp-pca63 fmnist-sv-hoglbp-pca95s1}
FMNIST=${BOWSVM_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
EPOCHS=${BOWSVM_DEMO_EPOCHS:-5}
# Hyper-parameters chosen on the val split (docs/BENCHMARKS.md, "End to end"), before the
# defaults re-weighted positives and averaged from the second epoch: pinned, so the demo
# gives the figures the README states.
TRAIN_OPTS=(--reg 1e-5 --eta0 0.1 --pos-weight 1 --average-start 0 --average-decay 0 --bias-lr 0.1 --epochs "$EPOCHS")
[ "${BOWSVM_DEMO_FRESH:-0}" = 1 ] && rm -rf "$OUT"
mkdir -p "$OUT"
T0=$(date +%s)
TIMES="$OUT/stage-times.tsv"
: > "$TIMES"

done_() { [ -f "$1/_SUCCESS" ] && [ -f "$1/manifest.json" ]; }
stage() {  # stage NAME OUTPUT_DIR COMMAND...
  local name=$1 dir=$2; shift 2
  if done_ "$dir"; then
    printf '\n==> %s: %s is complete, skipping\n' "$name" "$dir"
    return 0
  fi
  printf '\n==> %s\n' "$name"
  local t=$(date +%s)
  "$@"
  printf '%s\t%s\n' "$name" "$(( $(date +%s) - t ))" >> "$TIMES"
}

LIMIT=()
[ -n "${BOWSVM_DEMO_LIMIT:-}" ] && LIMIT=(--limit-per-class "$BOWSVM_DEMO_LIMIT")
stage "prepare Fashion-MNIST" "$OUT/images" \
  bowsvm prepare --fashion-mnist "$FMNIST" --output "$OUT/images" --val-per-class 500 \
    "${LIMIT[@]}" --master "$MASTER"

for fs in $SETS; do
  stage "codebook $fs" "$OUT/codebooks/$fs" \
    bowsvm codebook --feature-set "$fs" --images "$OUT/images" --codebooks "$OUT/codebooks" --master "$MASTER"
  stage "extract $fs" "$OUT/features/$fs" \
    bowsvm extract --feature-set "$fs" --images "$OUT/images" --codebooks "$OUT/codebooks" \
      --features "$OUT/features" --master "$MASTER"
  stage "train $fs" "$OUT/models/$fs" \
    bowsvm train --feature-set "$fs" --features "$OUT/features" --models "$OUT/models" "${TRAIN_OPTS[@]}"
  stage "train $fs (plain SGD, for the convergence plot)" "$OUT/models-sgd/$fs" \
    bowsvm train --feature-set "$fs" --features "$OUT/features" --models "$OUT/models-sgd" \
      "${TRAIN_OPTS[@]}" --no-average
  for split in val test; do
    stage "score $fs $split" "$OUT/scores/$fs/$split" \
      bowsvm score --feature-set "$fs" --split "$split" --features "$OUT/features" \
        --models "$OUT/models" --scores "$OUT/scores"
  done
done

stage "fuse" "$OUT/fusion" \
  bowsvm fuse --scores "$OUT/scores" --feature-sets "$(echo $SETS | tr ' ' ',')" --out "$OUT/fusion"

printf '\n==> report\n'
bowsvm report "$OUT/report.html" --models "$OUT/models" --scores "$OUT/scores" \
  --fusion "$OUT/fusion" --features "$OUT/features" --baseline-models "$OUT/models-sgd" \
  --images "$OUT/images"
printf 'total\t%s\n' "$(( $(date +%s) - T0 ))" >> "$TIMES"
printf '\nbowsvm demo finished in %s s. Stage times: %s\nReport: %s\n' \
  "$(( $(date +%s) - T0 ))" "$TIMES" "$(cd "$OUT" && pwd)/report.html"
