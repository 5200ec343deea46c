#!/usr/bin/env bash
# Set up the pinned environment and run the linters and the default (non-slow) test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow` or `bash scripts/test.sh tests/test_quantizer.py`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="$(bash scripts/env.sh)"
"$python" -m ruff check src tests benchmarks examples spaces docs/scripts
"$python" -m ruff format --check src tests benchmarks examples spaces docs/scripts
exec "$python" -m pytest "$@"
