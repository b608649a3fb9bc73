#!/usr/bin/env bash
# Semantic Tube Prediction: run.sh's drivers with stp.py, one output folder per run under
# RUNS_DIR (default runs/).
#
#   bash run_stp.sh run_regular  MODEL LR EPOCHS LAST_TOKEN PREDICTORS SEED LBD DATASET
#   bash run_stp.sh run_stp_jepa MODEL LR EPOCHS LAST_TOKEN PREDICTORS SEED LBD DATASET
#
# run_stp_jepa trains with --linear=$LINEAR (default random_span; e2e, mean or curvature for
# the ablations); the STP paper's setting is LBD 0.02. LAST_TOKEN and PREDICTORS are accepted
# as in run.sh; STP reads no view, so they change nothing there. Other STP flags go in
# TRAIN_ARGS (e.g. "--linear_predictor --length_adjustment cosine_like"). The environment
# variables of run.sh apply (DATA_DIR, SPIDER_PATH, NPROC, TRAIN_ARGS, EVAL_ARGS, ...).
set -euo pipefail
cd "$(dirname "$0")"
export FINETUNE=stp.py
# shellcheck source=run.sh
source ./run.sh

case ${1:-} in
    run_regular|run_stp_jepa)
        [ $# -eq 9 ] || { echo "usage: bash run_stp.sh $1 MODEL LR EPOCHS LAST_TOKEN PREDICTORS SEED LBD DATASET" >&2; exit 2; }
        ensure_env; "$@" ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
esac
