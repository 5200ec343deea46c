#!/usr/bin/env bash
# Build (or reuse) the pinned development environment and print its python.
#
# The venv lives outside the clone, keyed by a hash of the pins, so a reused machine skips the install
# while a fresh machine builds it from nothing. torch comes from requirements/ci.txt (the CPU wheel
# torch==2.13.0; an unpinned torch would pull a multi-GB CUDA build).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
key="$(cat "$root/requirements/ci.txt" "$root/requirements/nodeps.txt" "$root/pyproject.toml" | sha256sum | cut -c1-16)"
venv="${IBQ_HF_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ibq-hf/venv-$key}"
if [ ! -f "$venv/.complete" ]; then
    echo "Building the environment in $venv (first run on this machine: about 2 minutes)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet -r "$root/requirements/ci.txt" >&2
    "$venv/bin/python" -m pip install --quiet --no-deps -r "$root/requirements/nodeps.txt" >&2
    touch "$venv/.complete"
fi
# The package itself is (re)installed every time: the clone may have moved since the venv was built.
"$venv/bin/python" -m pip install --quiet --no-deps -e "$root" >&2
echo "$venv/bin/python"
