#!/bin/bash
# Data-parallel training launched by OpenMPI:
#   bash scripts/run_distribute_train.sh N [train.py arguments ...]
# mpirun starts N copies of scripts/mpi_launch_worker.sh, which map OpenMPI's rank variables
# onto MindSpore's dynamic cluster (a plain `mpirun python train.py` cannot initialise the CPU
# backend). Environment: TRAIN_SCRIPT (default train.py), MS_SCHED_HOST (default 127.0.0.1; the
# first server's address on several servers), MS_SCHED_PORT (default 8119), LOG_DIR (default
# mpirun_log), MPIRUN_ARGS (extra mpirun options such as a hostfile).
set -e
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
    echo "usage: bash $0 NUM_DEVICES [train.py arguments ...]" >&2
    exit 2
fi
NUM_DEVICES=$1
shift
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export TRAIN_SCRIPT=${TRAIN_SCRIPT:-train.py}
export MS_SCHED_HOST=${MS_SCHED_HOST:-127.0.0.1}
export MS_SCHED_PORT=${MS_SCHED_PORT:-8119}
export LOG_DIR=${LOG_DIR:-mpirun_log}
mkdir -p "$LOG_DIR"

ROOT_ARGS=""
if [ "$(id -u)" = "0" ]; then
    ROOT_ARGS="--allow-run-as-root"
fi
# shellcheck disable=SC2086
exec mpirun -n "$NUM_DEVICES" $ROOT_ARGS --oversubscribe --bind-to none \
    -x PATH -x PYTHONPATH -x LD_LIBRARY_PATH -x GLOG_v \
    -x TRAIN_SCRIPT -x MS_SCHED_HOST -x MS_SCHED_PORT -x LOG_DIR $MPIRUN_ARGS \
    bash "$SCRIPT_DIR/mpi_launch_worker.sh" "$@"
