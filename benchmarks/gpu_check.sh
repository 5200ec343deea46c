#!/usr/bin/env bash
# Launcher of benchmarks/gpu_check.py for a GPU machine without registry access (issue 14).
#
#   bash benchmarks/gpu_check.sh --prepare   # here, with registry access: fill benchmarks/gpu_wheels/
#   bash benchmarks/gpu_check.sh [ARGS...]   # there, from the repo root: install the wheels, run the check
#
# The GPU machine has torch 2.11, transformers 5.17, huggingface_hub 1.33 and no diffusers. --prepare downloads
# (pip download --no-deps) exactly the versions this project's venv uses of what is missing or too old there:
# diffusers and transformers. huggingface_hub is not carried: 1.33 meets every requirement (transformers 5.24
# needs >=1.31, diffusers 0.42.1 and ibq-hf >=1.32); torch is never carried. The folder is git-ignored and must
# travel as a carried path (device tool: carry ["benchmarks/gpu_wheels"]).
#
# The run installs the wheels with `pip install --no-index --no-deps --target` into $GPU_CHECK_SITE (default
# /tmp/ibq-gpu-check-site), puts that folder and src/ first on PYTHONPATH and runs gpu_check.py with the
# arguments given. $GPU_CHECK_PYTHON picks the interpreter (default python3).
set -euo pipefail

cd "$(dirname "$0")/.."
WHEELS=benchmarks/gpu_wheels
MAX_MIB=40
PY=${GPU_CHECK_PYTHON:-python3}

if [[ "${1:-}" == "--prepare" ]]; then
    VENV_PY=${IBQ_VENV_PYTHON:-.venv/bin/python}
    pins=()
    for pkg in diffusers transformers; do
        version=$("$VENV_PY" -c "import importlib.metadata as m; print(m.version('$pkg'))")
        pins+=("$pkg==$version")
    done
    rm -rf "$WHEELS"
    mkdir -p "$WHEELS"
    "$VENV_PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$WHEELS" "${pins[@]}"
    size=$(du -sb "$WHEELS" | cut -f1)
    ls -l "$WHEELS"
    echo "gpu_check.sh: ${pins[*]} -> $WHEELS ($((size / 1024)) KiB)"
    if ((size > MAX_MIB * 1024 * 1024)); then
        echo "gpu_check.sh: $WHEELS is over $MAX_MIB MiB" >&2
        exit 1
    fi
    exit 0
fi

SITE=${GPU_CHECK_SITE:-/tmp/ibq-gpu-check-site}
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
if ((${#wheels[@]} == 0)); then
    echo "gpu_check.sh: no wheels in $WHEELS (run 'bash benchmarks/gpu_check.sh --prepare' and carry it);" \
        "using the installed packages" >&2
else
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --disable-pip-version-check --target "$SITE" "${wheels[@]}"
fi
export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
"$PY" - <<'EOF'
import importlib.metadata as m

found = []
for name in ("torch", "transformers", "diffusers", "huggingface_hub", "accelerate", "safetensors"):
    try:
        found.append(f"{name} {m.version(name)}")
    except m.PackageNotFoundError:
        found.append(f"{name} (missing)")
print("gpu_check.sh: " + ", ".join(found), flush=True)
EOF
exec "$PY" benchmarks/gpu_check.py "$@"
