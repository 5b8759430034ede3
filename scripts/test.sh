#!/usr/bin/env bash
# natkit's whole test suite: lint, types, then every test (interop and lab
# tests included; they need root for namespaces and the Debian peers that
# scripts/setup.sh installs). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --no-demo
echo "==> ruff"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
echo "==> mypy --strict"
.venv/bin/mypy
echo "==> pytest"
# --durations: the slowest tests, printed at the end of every run, so the
# suite's 15-minute budget is watched where the time goes.
exec .venv/bin/python -m pytest --durations=25 "$@"
