#!/bin/bash
# One mpirun rank: join MindSpore's dynamic cluster as worker OMPI_COMM_WORLD_RANK of
# OMPI_COMM_WORLD_SIZE; rank 0 also runs the scheduler. Started by run_distribute_train.sh.
set -e
if [ -z "$OMPI_COMM_WORLD_RANK" ] || [ -z "$OMPI_COMM_WORLD_SIZE" ]; then
    echo "$0: OMPI_COMM_WORLD_RANK / OMPI_COMM_WORLD_SIZE not set; start it through mpirun" >&2
    exit 2
fi
export MS_WORKER_NUM=$OMPI_COMM_WORLD_SIZE
export MS_SCHED_HOST=${MS_SCHED_HOST:-127.0.0.1}
export MS_SCHED_PORT=${MS_SCHED_PORT:-8119}
LOG_DIR=${LOG_DIR:-mpirun_log}
mkdir -p "$LOG_DIR"

SCHED_PID=""
if [ "$OMPI_COMM_WORLD_RANK" = "0" ]; then
    MS_ROLE=MS_SCHED MS_NODE_ID=sched python "${TRAIN_SCRIPT:-train.py}" "$@" \
        > "$LOG_DIR/scheduler.log" 2>&1 &
    SCHED_PID=$!
fi
export MS_ROLE=MS_WORKER
export MS_NODE_ID=$OMPI_COMM_WORLD_RANK
python "${TRAIN_SCRIPT:-train.py}" "$@" 2>&1 | tee "$LOG_DIR/worker_${OMPI_COMM_WORLD_RANK}.log"
STATUS=${PIPESTATUS[0]}
if [ -n "$SCHED_PID" ]; then
    wait "$SCHED_PID" || true
fi
exit "$STATUS"
