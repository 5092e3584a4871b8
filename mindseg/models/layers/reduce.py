"""Averages over the data-parallel ranks inside a training step, for loss normalisers that
centermask2 computes over the whole job (FCOS's positive count and centerness-target sum)."""
import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops


class RankMean(nn.Cell):
    """``x`` -> its mean over ``world`` ranks (AllReduce sum / world); no gradient flows."""

    def __init__(self, world):
        super().__init__()
        self.world = float(world)
        self.all_reduce = ops.AllReduce()

    def construct(self, x):
        return self.all_reduce(ops.stop_gradient(x)) / self.world


def data_parallel_mean():
    """A :class:`RankMean` over the job's ranks when data-parallel training is set up
    (``mindseg.runtime.init_distributed``), else None (one device: the local value is the mean)."""
    if ms.get_auto_parallel_context("parallel_mode") != ms.ParallelMode.DATA_PARALLEL:
        return None
    world = int(ms.get_auto_parallel_context("device_num"))
    return RankMean(world) if world > 1 else None
