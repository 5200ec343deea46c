#!/usr/bin/env bash
# Build (or reuse) the pinned development environment, link it as .venv in the clone, and print its python.
#
# The venv lives outside the clone, keyed by a hash of the pins, so a reused machine skips the install
# while a fresh machine builds it from nothing. torch comes from requirements/ci.txt (the CPU wheel
# torch==2.13.0; an unpinned torch would pull a multi-GB CUDA build). `<clone>/.venv` is a symlink to it, so
# `source .venv/bin/activate` puts `ibq-hf` and the package on a plain shell's PATH.
# Progress goes to stderr, one line per stage; stdout is only the python path (callers capture it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
key="$(cat "$root/requirements/ci.txt" "$root/requirements/nodeps.txt" "$root/pyproject.toml" | sha256sum | cut -c1-16)"
venv="${IBQ_HF_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ibq-hf/venv-$key}"
say() { echo "[ibq-hf set-up] $*" >&2; }
fresh=""
if [ ! -f "$venv/.complete" ]; then
    fresh=1
    start=$SECONDS
    say "first run on this machine: building the pinned environment in $venv (about 2 minutes)"
    rm -rf "$venv"
    say "1/4 creating the virtual environment"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    say "2/4 installing the pinned packages of requirements/ci.txt (torch CPU wheel, transformers, diffusers, ...)"
    "$venv/bin/python" -m pip install --quiet -r "$root/requirements/ci.txt" >&2
    say "3/4 installing requirements/nodeps.txt without dependencies"
    "$venv/bin/python" -m pip install --quiet --no-deps -r "$root/requirements/nodeps.txt" >&2
    touch "$venv/.complete"
fi
# The package is (re)installed (editable) unless this clone is the one installed: the clone may have moved since
# the venv was built. A change of pyproject.toml changes the key above, so its metadata is never stale.
installed="$("$venv/bin/python" -c 'import ibq_hf, os; print(os.path.dirname(os.path.dirname(os.path.abspath(ibq_hf.__file__))))' 2>/dev/null || true)"
if [ -n "$fresh" ] || [ "$installed" != "$root/src" ]; then
    say "4/4 installing ibq-hf from $root (editable)"
    "$venv/bin/python" -m pip install --quiet --no-deps -e "$root" >&2
fi
# One obvious way in: <clone>/.venv → the environment (replaced only when it is a link or absent).
if [ -L "$root/.venv" ] || [ ! -e "$root/.venv" ]; then
    ln -sfn "$venv" "$root/.venv"
fi
[ -z "$fresh" ] || say "environment ready in $((SECONDS - start)) s; to use it in this shell: source $root/.venv/bin/activate"
echo "$venv/bin/python"
