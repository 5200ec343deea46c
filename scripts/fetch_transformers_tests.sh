#!/usr/bin/env bash
# Fetch transformers' common model tests (they ship in the sdist, not in the wheel) for
# tests/models/test_ar_transformers_common.py: downloads the sdist of the installed transformers version through
# pip, unpacks it into the cache folder that test reads, and installs `parameterized` (imported by the tests) next
# to it, leaving the pinned environment untouched. Needs the package registry; CI (offline) skips those tests.
#   bash scripts/fetch_transformers_tests.sh            # then: python -m pytest tests/models/test_ar_transformers_common.py -m slow
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
version="$("$python" -c 'import transformers; print(transformers.__version__)')"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/ibq_hf/transformers-$version"
mkdir -p "$cache"
if [ ! -f "$cache/transformers-$version/tests/test_modeling_common.py" ]; then
    download="$(mktemp -d)"
    trap 'rm -rf "$download"' EXIT
    "$python" -m pip download "transformers==$version" --no-deps --no-binary :all: -d "$download" -q
    tar -xzf "$download/transformers-$version.tar.gz" -C "$cache" "transformers-$version/tests" "transformers-$version/PKG-INFO"
fi
if [ ! -d "$cache/site-packages/parameterized" ]; then
    "$python" -m pip install --quiet --no-deps --target "$cache/site-packages" parameterized
fi
echo "transformers $version common tests in $cache/transformers-$version (set IBQ_HF_TRANSFORMERS_TESTS to use another copy)"
