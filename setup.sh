#!/usr/bin/env bash
# Set up (or refresh) the environment. Safe to re-run: every step checks first.
#
#   bash setup.sh            .venv with the tested stack: every package at the version
#                            constraints.txt pins (what CI, the demo and the studies run on)
#   bash setup.sh --latest   .venv-latest with the newest releases pyproject.toml allows,
#                            to find a new release's breakage before users do
#                            (`bash run.sh test-latest` runs the suite there)
#   bash setup.sh --lock     rewrite constraints.txt from .venv-latest (after its tests pass)
#
# torch: where nvidia-smi exists, the CUDA build from PyPI; otherwise the CPU build: a
# local wheel when pip's find-links has one (the development machines), else the PyTorch
# CPU index. The lock pins its version, not its build (2.13.0 matches 2.13.0+cpu).
set -euo pipefail
cd "$(dirname "$0")"

MODE=pinned
case ${1:-} in
    "") ;;
    --latest) MODE=latest ;;
    --lock) MODE=lock ;;
    *) echo "usage: bash setup.sh [--latest | --lock]" >&2; exit 2 ;;
esac

PY=${PYTHON:-python3}
LOCK=constraints.txt
EXTRAS="test,eval,gguf"   # gguf: converting the real pretrained models (python -m llm_jepa.models)
TORCH_PINNED=$(sed -n 's/^torch==\([^ ]*\).*/\1/p' "$LOCK")
say() { echo "[setup] $*"; }

# Write constraints.txt from a venv: every installed distribution but this project, with
# local version labels dropped (torch 2.13.0+cpu -> 2.13.0) so the CUDA build matches too.
write_lock() {
    local vpy=$1
    { echo "# The tested stack: exact versions of every package the project runs on."
      echo "# setup.sh installs these (pip -c); pyproject.toml keeps the ranges for other installs."
      echo "# Regenerate: bash setup.sh --latest && bash run.sh test-latest && bash setup.sh --lock"
      "$vpy" -m pip freeze --exclude-editable --disable-pip-version-check \
          | grep -v -i -E '^(llm-jepa|pip|setuptools|wheel)==' | sed -E 's/\+[A-Za-z0-9.]+$//' | sort -f
    } > "$LOCK.tmp"
    mv "$LOCK.tmp" "$LOCK"
    say "wrote $LOCK from $vpy ($(grep -c '==' "$LOCK") packages)"
}

if [ "$MODE" = lock ]; then
    [ -x .venv-latest/bin/python ] || { echo "no .venv-latest: run bash setup.sh --latest first" >&2; exit 2; }
    write_lock .venv-latest/bin/python
    exit 0
fi

VENV=.venv
[ "$MODE" = latest ] && VENV=.venv-latest
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $($PY --version)"
    $PY -m venv "$VENV"
else
    say "$VENV exists"
fi
VPY=$VENV/bin/python
PIP=("$VPY" -m pip install -q --disable-pip-version-check)

install_torch() {
    local want=$1  # an exact version, or a range
    local spec="torch$want"
    if "$VPY" -c "import torch" 2>/dev/null && "$VPY" - "$want" <<'PY' 2>/dev/null
import sys, torch
want, have = sys.argv[1], torch.__version__.split("+")[0]
if want.startswith("=="):
    sys.exit(0 if have == want[2:] else 1)
sys.exit(0 if tuple(map(int, have.split(".")[:2])) >= (2, 13) else 1)
PY
    then
        say "torch $("$VPY" -c 'import torch; print(torch.__version__)') already installed"
    elif command -v nvidia-smi >/dev/null 2>&1; then
        say "nvidia-smi found: installing the CUDA build of $spec"
        "${PIP[@]}" "$spec"
    elif "${PIP[@]}" --no-index --no-deps "torch==$TORCH_PINNED" 2>/dev/null; then
        # a local wheel exists (pip's find-links); now its dependencies, from the package index
        "${PIP[@]}" "torch==$TORCH_PINNED" -c "$LOCK"
        say "installed the local CPU wheel torch==$TORCH_PINNED"
    else
        say "installing the CPU build of $spec from the PyTorch CPU index"
        "${PIP[@]}" "$spec" --index-url https://download.pytorch.org/whl/cpu
    fi
}

# Does the venv hold exactly the lock's versions? (prints the differences when not)
matches_lock() {
    "$VPY" - "$LOCK" <<'PY'
import sys
from pathlib import Path
try:
    from llm_jepa.environment import lock_differences, read_lock
except ImportError:
    sys.exit(1)
diffs = lock_differences(read_lock(Path(sys.argv[1])))
for name, (have, pinned) in list(diffs.items())[:10]:
    print(f"[setup]   {name}: {have or 'missing'} (pinned {pinned})")
sys.exit(1 if diffs else 0)
PY
}

if [ "$MODE" = pinned ]; then
    install_torch "==$TORCH_PINNED"
    if matches_lock >/dev/null && [ "$VENV/.installed" -nt pyproject.toml ]; then
        say "llm-jepa and the pinned stack ($LOCK) already installed"
        touch "$VENV/.installed"
    else
        matches_lock || true
        say "installing llm-jepa (editable) with the pinned stack ($LOCK)"
        "${PIP[@]}" -e ".[$EXTRAS]" -c "$LOCK"
        matches_lock || { echo "[setup] the install does not match $LOCK (see above)" >&2; exit 1; }
        touch "$VENV/.installed"
    fi
else
    install_torch ">=2.13,<3"
    # Everything else at its newest; torch stays the build installed above (an eager upgrade
    # would swap a CPU build for a multi-GB CUDA one).
    keep_torch=$(mktemp)
    "$VPY" -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > "$keep_torch"
    say "installing llm-jepa (editable) with the newest releases pyproject.toml allows"
    "${PIP[@]}" --upgrade --upgrade-strategy eager -e ".[$EXTRAS]" -c "$keep_torch"
    rm -f "$keep_torch"
fi

"$VPY" - <<'PY'
from llm_jepa.environment import stack_line, stack_record
print("[setup] ready:", stack_line(stack_record()))
PY
