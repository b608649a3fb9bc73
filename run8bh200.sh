#!/usr/bin/env bash
# Models up to 8B on 8 x H200: run.sh's drivers with finetune8bh200.py (FSDP2, no
# intermediate checkpoints), one output folder per run under RUNS_DIR (default runs8b/).
#
#   bash run8bh200.sh olmo2 DATASET SEED      OLMo-2-7B-Instruct, regular and JEPA
#   bash run8bh200.sh llama31 DATASET SEED    Llama-3.1-8B-Instruct, regular and JEPA
#   bash run8bh200.sh run_regular|run_jepa MODEL LR EPOCHS LAST_TOKEN PREDICTORS SEED LBD DATASET
#
# The environment variables of run.sh apply (DATA_DIR, SPIDER_PATH, NPROC, NNODES, TRAIN_ARGS, ...).
set -euo pipefail
cd "$(dirname "$0")"
export FINETUNE=finetune8bh200.py
export RUNS_DIR=${RUNS_DIR:-runs8b}
export NPROC=${NPROC:-8}
# shellcheck source=run.sh
source ./run.sh

# model, learning rate, lbd, k: the published large-model settings
config() {
    case $1 in
        olmo2) echo "allenai/OLMo-2-1124-7B-Instruct 2e-5 1.0 1" ;;
        llama31) echo "meta-llama/Llama-3.1-8B-Instruct 2e-5 1.0 1" ;;
        *) echo "unknown config '$1' (olmo2, llama31)" >&2; return 1 ;;
    esac
}

both() {
    local model lr lbd k settings
    settings=$(config "$1") || exit 2
    read -r model lr lbd k <<< "$settings"
    run_regular "$model" "$lr" 4 auto 0 "$3" "$lbd" "$2"
    run_jepa "$model" "$lr" 4 auto "$k" "$3" "$lbd" "$2"
}

case ${1:-} in
    olmo2|llama31) [ $# -eq 3 ] || { echo "usage: bash run8bh200.sh $1 DATASET SEED" >&2; exit 2; }
        ensure_env; both "$@" ;;
    run_regular|run_jepa) ensure_env; "$@" ;;
    *) sed -n '2,9p' "$0"; exit 2 ;;
esac
