#!/usr/bin/env bash
# Set up (or refresh) the environment in .venv. Safe to re-run: every step checks first.
#
#   bash setup.sh            # CPU, or the CUDA build of torch where nvidia-smi exists
#
# torch: where nvidia-smi exists, the CUDA build from PyPI; otherwise the CPU build: a
# local wheel when pip's find-links has one (torch==2.13.0 on the development machines),
# else the PyTorch CPU index.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
TORCH_SPEC="torch>=2.13,<3"
say() { echo "[setup] $*"; }

if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $($PY --version)"
    $PY -m venv .venv
else
    say ".venv exists"
fi
VPY=.venv/bin/python

if $VPY -c "import torch, sys; v = tuple(map(int, torch.__version__.split('+')[0].split('.')[:2])); sys.exit(0 if v >= (2, 13) else 1)" 2>/dev/null; then
    say "torch $($VPY -c 'import torch; print(torch.__version__)') already installed"
elif command -v nvidia-smi >/dev/null 2>&1; then
    say "nvidia-smi found: installing the CUDA build of torch"
    $VPY -m pip install -q "$TORCH_SPEC"
elif $VPY -m pip install -q --no-index --no-deps torch==2.13.0 2>/dev/null; then
    # a local wheel exists (pip's find-links); now its dependencies, from the package index
    $VPY -m pip install -q torch==2.13.0
    say "installed the local CPU wheel torch==2.13.0"
else
    say "installing the CPU build of torch from the PyTorch CPU index"
    $VPY -m pip install -q "$TORCH_SPEC" --index-url https://download.pytorch.org/whl/cpu
fi

if $VPY -c "import llm_jepa, transformers, peft, accelerate, datasets, sqlparse, pytest, scipy, matplotlib, sklearn" 2>/dev/null \
   && [ .venv/.installed -nt pyproject.toml ]; then
    say "llm-jepa and its dependencies already installed"
else
    say "installing llm-jepa (editable) with its test and eval extras"
    $VPY -m pip install -q -e ".[test,eval]"
    touch .venv/.installed
fi

$VPY - <<'PY'
import accelerate, datasets, peft, torch, transformers
cuda = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)" if torch.cuda.is_available() else "CPU only"
print(f"[setup] ready: torch {torch.__version__} ({cuda}), transformers {transformers.__version__}, "
      f"peft {peft.__version__}, accelerate {accelerate.__version__}, datasets {datasets.__version__}")
PY
