#!/bin/bash
# Data-parallel training launched by OpenMPI, on one server or several:
#   bash scripts/run_distribute_train.sh N [train.py arguments ...]
# starts `mpirun -n N python train.py ...`: N ranks over the slots of HOSTFILE (default: this
# server). Each rank joins MindSpore's dynamic cluster itself (mindseg/runtime.py): world size and
# rank from OpenMPI, the device from its local rank, the scheduler beside world rank 0.
# Environment: HOSTFILE (an OpenMPI hostfile, `host slots=8` per line; world rank 0 runs on its
# first host), MS_SCHED_HOST (the scheduler's address; default that first host's IPv4 address, or
# 127.0.0.1), MS_SCHED_PORT (default 8119), TRAIN_SCRIPT (default train.py), LOG_DIR (default
# mpirun_log; rank r's output in LOG_DIR/1/rank.r/), MPIRUN_ARGS (extra mpirun options).
set -e
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
    echo "usage: [HOSTFILE=..] bash $0 NUM_DEVICES [train.py arguments ...]" >&2
    exit 2
fi
NUM_DEVICES=$1
shift
HOST_ARGS=""
FIRST_HOST=127.0.0.1
if [ -n "$HOSTFILE" ]; then
    if [ ! -f "$HOSTFILE" ]; then
        echo "$0: HOSTFILE=$HOSTFILE: no such file" >&2
        exit 2
    fi
    FIRST_HOST=$(awk '!/^[[:space:]]*(#|$)/ {print $1; exit}' "$HOSTFILE")
    if [ -z "$FIRST_HOST" ]; then
        echo "$0: HOSTFILE=$HOSTFILE names no host" >&2
        exit 2
    fi
    FIRST_HOST=$(getent ahostsv4 "$FIRST_HOST" | awk 'NR == 1 {print $1}' || true)
    FIRST_HOST=${FIRST_HOST:-$(awk '!/^[[:space:]]*(#|$)/ {print $1; exit}' "$HOSTFILE")}
    HOST_ARGS="--hostfile $HOSTFILE --map-by slot"
fi
export MS_SCHED_HOST=${MS_SCHED_HOST:-$FIRST_HOST}
export MS_SCHED_PORT=${MS_SCHED_PORT:-8119}
TRAIN_SCRIPT=${TRAIN_SCRIPT:-train.py}
LOG_DIR=${LOG_DIR:-mpirun_log}
mkdir -p "$LOG_DIR"

ROOT_ARGS=""
if [ "$(id -u)" = "0" ]; then
    ROOT_ARGS="--allow-run-as-root"
fi
# shellcheck disable=SC2086
exec mpirun -n "$NUM_DEVICES" $ROOT_ARGS $HOST_ARGS --oversubscribe --bind-to none \
    --output-filename "$LOG_DIR" \
    -x PATH -x PYTHONPATH -x LD_LIBRARY_PATH -x GLOG_v -x MS_SCHED_HOST -x MS_SCHED_PORT \
    $MPIRUN_ARGS python "$TRAIN_SCRIPT" "$@"
