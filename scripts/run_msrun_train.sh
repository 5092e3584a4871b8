#!/bin/bash
# Data-parallel training on one server with msrun (MindSpore's launcher):
#   bash scripts/run_msrun_train.sh N [train.py arguments ...]
# Environment: TRAIN_SCRIPT (default train.py), MASTER_PORT (default 8118), LOG_DIR (default
# msrun_log; one worker_<rank>.log per rank). HCCL on Ascend, NCCL on GPU, MCCL on CPU.
set -e
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
    echo "usage: bash $0 NUM_DEVICES [train.py arguments ...]" >&2
    exit 2
fi
NUM_DEVICES=$1
shift
TRAIN_SCRIPT=${TRAIN_SCRIPT:-train.py}
MASTER_PORT=${MASTER_PORT:-8118}
LOG_DIR=${LOG_DIR:-msrun_log}

exec msrun --worker_num="$NUM_DEVICES" --local_worker_num="$NUM_DEVICES" \
    --master_port="$MASTER_PORT" --join=True --log_dir="$LOG_DIR" \
    "$TRAIN_SCRIPT" "$@"
