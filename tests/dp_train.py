"""``train.py`` that also writes, for each rank, the losses of every step and the final weights to
``$DUMP_DIR/rank<r>.json`` / ``rank<r>.npz``, so that launches can be compared rank by rank
(train.py itself writes from rank 0 only). Launched by tests/test_multinode.py."""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import mindseg  # noqa: E402,F401  (before mindspore: oneDNN CPU kernels)
from mindseg.engine import trainer  # noqa: E402

import numpy as np  # noqa: E402


class RecordingStep(trainer.TrainStep):
    """The trainer's step, keeping each step's named losses as Python floats."""
    records = []

    def __call__(self, *inputs):
        total, losses, finite = super().__call__(*inputs)
        RecordingStep.records.append([float(x) for x in losses])
        return total, losses, finite


def main():
    import train
    dump_dir = os.environ["DUMP_DIR"]
    run_train = trainer.train
    kept = {}

    def train_and_keep(cfg, net, dataset, runtime, **kwargs):
        kept.update(net=net, runtime=runtime, loss_names=list(getattr(net, "loss_names", ())))
        return run_train(cfg, net, dataset, runtime, **kwargs)

    trainer.TrainStep, trainer.train = RecordingStep, train_and_keep
    summary = train.main(sys.argv[1:])
    runtime = kept["runtime"]
    os.makedirs(dump_dir, exist_ok=True)
    np.savez(os.path.join(dump_dir, f"rank{runtime.rank}.npz"),
             **{p.name: p.asnumpy() for p in kept["net"].get_parameters()})
    with open(os.path.join(dump_dir, f"rank{runtime.rank}.json"), "w") as f:
        json.dump({"losses": RecordingStep.records, "loss_names": kept["loss_names"],
                   "rank": runtime.rank, "world": runtime.world, "nodes": runtime.nodes,
                   "local_rank": runtime.local_rank, "total_steps": summary["total_steps"]}, f)


if __name__ == "__main__":
    main()
