#!/bin/bash
# Data-parallel training with msrun (MindSpore's launcher), on one server or several:
#   bash scripts/run_msrun_train.sh N [train.py arguments ...]
# N is the number of devices (workers) on this server. On several servers, run the same command on
# each with the node layout in the environment (as MindSpore's docs and ModelArts name it):
#   NUM_NODES (default 1), NODE_RANK (this server, 0 .. NUM_NODES-1; default 0),
#   MASTER_ADDR (server 0's address, where msrun starts the scheduler; default 127.0.0.1),
#   MASTER_PORT (default 8118).
# Also: TRAIN_SCRIPT (default train.py), LOG_DIR (default msrun_log; one worker_<rank>.log per
# rank). HCCL on Ascend, NCCL on GPU, MCCL on CPU.
set -e
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
    echo "usage: [NUM_NODES=.. NODE_RANK=.. MASTER_ADDR=..] bash $0 DEVICES_PER_NODE [train.py arguments ...]" >&2
    exit 2
fi
NUM_DEVICES=$1
shift
TRAIN_SCRIPT=${TRAIN_SCRIPT:-train.py}
NUM_NODES=${NUM_NODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-8118}
LOG_DIR=${LOG_DIR:-msrun_log}
if ! [[ "$NUM_NODES" =~ ^[1-9][0-9]*$ ]] || ! [[ "$NODE_RANK" =~ ^[0-9]+$ ]] \
        || [ "$NODE_RANK" -ge "$NUM_NODES" ]; then
    echo "$0: NODE_RANK=$NODE_RANK must be in 0 .. NUM_NODES-1 (NUM_NODES=$NUM_NODES)" >&2
    exit 2
fi
# the workers' place on their server (msrun itself exports DEVICE_ID = the local index)
export LOCAL_WORLD_SIZE=$NUM_DEVICES

exec msrun --worker_num="$((NUM_NODES * NUM_DEVICES))" --local_worker_num="$NUM_DEVICES" \
    --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
    --join=True --log_dir="$LOG_DIR" "$TRAIN_SCRIPT" "$@"
