#!/usr/bin/env bash
# The main job: set up the pinned environment, then draw every digit with the bundled IBQ digits pipeline.
# Writes digits_grid.png (a row per digit 0-9, 8 samples each). Extra arguments go to `ibq-hf generate`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="$(bash scripts/env.sh)"
classes=()
for digit in 0 1 2 3 4 5 6 7 8 9; do classes+=(--class "$digit"); done
"$python" -m ibq_hf.cli generate --model checkpoints/ibq-digits "${classes[@]}" --num-images 8 --seed 0 \
    --output digits_grid.png "$@"
echo "Wrote $root/digits_grid.png. To run ibq-hf and the Python examples of README.md in this shell: source .venv/bin/activate" >&2
