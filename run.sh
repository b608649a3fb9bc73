#!/usr/bin/env bash
# LLM-JEPA driver: train, evaluate, and collect results; the published run.sh, and then some.
#
#   bash run.sh demo                      the whole pipeline offline on a CPU (~5 minutes)
#   bash run.sh test [PYTEST_ARGS...]     the test suite, on the pinned stack (constraints.txt)
#   bash run.sh test-latest [PYTEST_ARGS...]   the same on the newest releases (.venv-latest)
#   bash run.sh run_regular MODEL LR EPOCHS LAST_TOKEN PREDICTORS SEED LBD DATASET
#   bash run.sh run_jepa    MODEL LR EPOCHS LAST_TOKEN PREDICTORS SEED LBD DATASET
#   bash run.sh paper DATASET [MODEL]     the paper's protocol: 5 seeds, regular and JEPA
#   bash run.sh run_stp run_regular|run_stp_jepa MODEL LR EPOCHS LAST_TOKEN PREDICTORS SEED LBD DATASET
#                                         Semantic Tube Prediction (stp.py; see run_stp.sh)
#   bash run.sh study scratch|smollm2 [--quick]   the accuracy studies behind the README's Results
#
# run_regular / run_jepa train with finetune.py, evaluate DATA_DIR/<DATASET>_test.jsonl and
# append the `Success Rate: ...` lines to output.txt, as published; each run also has its
# own folder, RUNS_DIR/<dataset>_<method>_<model>_lr.._lbd.._k.._s<seed>, with the model,
# the evaluation rows and the summary JSON that `python evaluate.py report` reads.
# LAST_TOKEN is passed to --last_token (an offset such as -2 as in the published run.sh,
# or auto); PREDICTORS is k. MODEL is a folder, a hub id, or a short name of
# `python -m llm_jepa.models list` (smollm2-135m-instruct), fetched and converted on first use.
# A missing DATA_DIR/<DATASET>_{train,test}.jsonl is made first with
# `python -m llm_jepa.corpora prepare DATASET --out DATA_DIR` (a download).
#
# Environment:
#   DATA_DIR     dataset folder (default datasets/; on the development machines ../shared/datasets)
#   SPIDER_PATH  Spider databases (default: spider_data/database beside DATA_DIR, else ./spider_data/database);
#                a spider run stops before training when they are not there
#   RUNS_DIR     where run folders go (default runs/)
#   NPROC        processes per node (default: the number of visible GPUs, else 1; 1 runs without torchrun)
#   NNODES NODE_RANK MASTER_ADDR MASTER_PORT   passed to torchrun for multi-node runs
#   TRAIN_ARGS   extra finetune.py flags (e.g. "--dtype fp32 --max_steps 20")
#   EVAL_ARGS    extra evaluate.py flags (e.g. "--max_examples 200")
#   FINETUNE     the training script (default finetune.py; run8bh200.sh uses finetune8bh200.py)
#   OUTPUT       the file the Success Rate lines are appended to (default output.txt)
set -euo pipefail
cd "$(dirname "$0")"

DATA_DIR=${DATA_DIR:-datasets}
SPIDER_PATH=${SPIDER_PATH:-}
RUNS_DIR=${RUNS_DIR:-runs}
FINETUNE=${FINETUNE:-finetune.py}
OUTPUT=${OUTPUT:-output.txt}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
PY=.venv/bin/python
PAPER_SEEDS=(82 23 37 84 4)

# .venv with the pinned stack; setup.sh runs again when the lock or pyproject.toml changed.
ensure_env() {
    if [ ! -x "$PY" ] || [ ! -e .venv/.installed ] || [ constraints.txt -nt .venv/.installed ] \
       || [ pyproject.toml -nt .venv/.installed ] || ! "$PY" -c "import llm_jepa" 2>/dev/null; then
        bash setup.sh
    fi
}

gpu_count() {
    if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L 2>/dev/null | grep -c "^GPU" || echo 1; else echo 1; fi
}

# Run a script on NPROC processes per node: plainly with one process (works on CPU), else torchrun.
launch() {
    local nproc=${NPROC:-$(gpu_count)}
    if [ "$nproc" -le 1 ] && [ "$NNODES" -le 1 ]; then
        "$PY" "$@"
    else
        .venv/bin/torchrun --nproc_per_node="$nproc" --nnodes="$NNODES" --node_rank="$NODE_RANK" \
            --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" "$@"
    fi
}

# The Spider databases: SPIDER_PATH when set; else the first of spider_data/database beside
# DATA_DIR (`prepare spider_data --out spider_data/` next to datasets/; ../shared/spider_data
# on the development machines) and ./spider_data/database that holds databases.
spider_candidates() {
    if [ -n "$SPIDER_PATH" ]; then echo "$SPIDER_PATH"; return; fi
    local sibling
    sibling="$(dirname "$DATA_DIR")/spider_data/database"
    echo "$sibling"
    [ "$sibling" -ef spider_data/database ] || [ "$sibling" = ./spider_data/database ] || echo spider_data/database
}

has_databases() { compgen -G "$1/*/*.sqlite" >/dev/null; }

# The folder to pass as --spider_path; a spider run without its databases would score
# nothing, so it stops before training, saying where it looked.
spider_path() {
    local dir looked=""
    while read -r dir; do
        if has_databases "$dir"; then echo "$dir"; return 0; fi
        looked="${looked:+$looked nor in }$dir"
    done < <(spider_candidates)
    echo "run.sh: no Spider databases (<db_id>/<db_id>.sqlite) in $looked; get them with" \
         "'python -m llm_jepa.corpora prepare spider_data --out spider_data/', or set SPIDER_PATH" \
         "to the folder that holds them" >&2
    return 2
}

# The dataset's files; when one is missing, `python -m llm_jepa.corpora prepare` makes them
# (downloading the upstream data), and when that fails the run stops before training.
prepare_dataset() { "$PY" -m llm_jepa.corpora prepare "$1" --out "$DATA_DIR"; }

ensure_dataset() {
    local dataset=$1 train="$DATA_DIR/${1}_train.jsonl" test="$DATA_DIR/${1}_test.jsonl" f missing=()
    for f in "$train" "$test"; do [ -f "$f" ] || missing+=("$f"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    local cmd="python -m llm_jepa.corpora prepare $dataset --out $DATA_DIR"
    echo "run.sh: no ${missing[*]}; making the $dataset files with '$cmd'" >&2
    if ! prepare_dataset "$dataset" || [ ! -f "$train" ] || [ ! -f "$test" ]; then
        echo "run.sh: '$cmd' did not make $train and $test (see above); run it yourself, or set" \
             "DATA_DIR to the folder that holds them" >&2
        return 2
    fi
}

# A short model name (smollm2-135m-instruct) is fetched and converted here, once, before
# training and before torchrun starts its ranks; the drivers then load it from the cache.
# Other names pass through untouched.
fetch_model() { "$PY" -m llm_jepa.models resolve "$1" >/dev/null; }

# run_one regular|jepa|stp MODEL LR EPOCHS LAST_TOKEN PREDICTORS SEED LBD DATASET
# (stp: --linear "$LINEAR", random_span by default)
run_one() {
    local method=$1 model=$2 lr=$3 epochs=$4 last_token=$5 predictors=$6 seed=$7 lbd=$8 dataset=$9
    local name out spider=""
    if [ "$dataset" = spider ]; then
        spider=$(spider_path) || return 2
    fi
    ensure_dataset "$dataset" || return 2
    fetch_model "$model" || return 2
    name=$(basename "$model")
    out="$RUNS_DIR/${dataset}_${method}_${name}_lr${lr}_lbd${lbd}_k${predictors}_s${seed}"
    local flags=(--train_file "$DATA_DIR/${dataset}_train.jsonl" --model_name "$model" --output_dir "$out"
                 --overwrite_output_dir --learning_rate "$lr" --num_epochs "$epochs" --last_token="$last_token"
                 --predictors "$predictors" --finetune_seed "$seed" --lbd "$lbd")
    [ "$method" = regular ] && flags+=(--regular)
    [ "$method" = stp ] && flags+=(--linear="${LINEAR:-random_span}")
    # shellcheck disable=SC2086
    launch "$FINETUNE" "${flags[@]}" ${TRAIN_ARGS:-}
    local eval_flags=(--model_name "$out" --original_model_name "$model" --input_file "$DATA_DIR/${dataset}_test.jsonl"
                      --output_file "$out/eval/${dataset}_test.jsonl" --nosplit_data --split_tune_untune)
    [ -n "$spider" ] && eval_flags+=(--spider_path "$spider")
    mkdir -p "$out/eval"
    # shellcheck disable=SC2086
    "$PY" evaluate.py "${eval_flags[@]}" ${EVAL_ARGS:-} | tee "$out/eval/stdout.txt" | grep "^Success Rate:" >> "$OUTPUT"
    tail -n 1 "$OUTPUT"
}

run_regular() { run_one regular "$@"; }
run_jepa() { run_one jepa "$@"; }
run_stp_jepa() { run_one stp "$@"; }

# The paper's best configuration per dataset: lr lbd k
paper_config() {
    case $1 in
        synth|turk) echo "2e-5 1.0 1" ;;
        gsm8k) echo "2e-5 0.5 4" ;;
        spider) echo "4e-5 1.0 3" ;;
        *) echo "no published configuration for '$1' (known: synth turk gsm8k spider)" >&2; return 1 ;;
    esac
}

paper() {
    local dataset=$1 model=${2:-meta-llama/Llama-3.2-1B-Instruct} lr lbd k settings
    settings=$(paper_config "$dataset") || exit 2
    read -r lr lbd k <<< "$settings"
    local base=$RUNS_DIR
    RUNS_DIR="$base/paper_${dataset}"
    for seed in "${PAPER_SEEDS[@]}"; do
        run_regular "$model" "$lr" 4 auto 0 "$seed" "$lbd" "$dataset"
        run_jepa "$model" "$lr" 4 auto "$k" "$seed" "$lbd" "$dataset"
    done
    "$PY" evaluate.py report "$RUNS_DIR" --csv "$RUNS_DIR/table.csv" --png "$RUNS_DIR/table.png"
}

main() {
    local cmd=${1:-}
    [ -n "$cmd" ] || { sed -n '2,13p' "$0"; exit 2; }
    shift
    case $cmd in
        test) ensure_env; "$PY" -m pytest -q -p no:cacheprovider "$@" ;;
        test-latest) bash setup.sh --latest; .venv-latest/bin/python -m pytest -q -p no:cacheprovider "$@" ;;
        demo) ensure_env; "$PY" -m llm_jepa.demo "$@" ;;
        run_regular|run_jepa)
            [ $# -eq 8 ] || { echo "usage: bash run.sh $cmd MODEL LR EPOCHS LAST_TOKEN PREDICTORS SEED LBD DATASET" >&2; exit 2; }
            ensure_env; "$cmd" "$@" ;;
        paper) [ $# -ge 1 ] || { echo "usage: bash run.sh paper DATASET [MODEL]" >&2; exit 2; }
            ensure_env; paper "$@" ;;
        run_stp) exec bash run_stp.sh "$@" ;;
        study) [ $# -ge 1 ] || { echo "usage: bash run.sh study scratch|smollm2 [--quick]" >&2; exit 2; }
            ensure_env; "$PY" -m llm_jepa.study "$@" ;;
        *) echo "unknown command '$cmd' (demo, test, test-latest, run_regular, run_jepa, paper, run_stp, study)" >&2; exit 2 ;;
    esac
}

# Sourcing this file (as run8bh200.sh does) defines the functions without running anything.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
