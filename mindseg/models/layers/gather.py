"""Per-image gathers on padded batches and per-row class selection: the static-shape replacements
for boolean and fancy indexing."""
import mindspore as ms
import mindspore.numpy as mnp
import mindspore.ops as ops


def gather_rows(values, index):
    """values (B, N, ...), index (B, S) int -> (B, S, ...): ``values[b, index[b, s]]``."""
    batch, length = values.shape[0], values.shape[1]
    offsets = (mnp.arange(batch, dtype=index.dtype) * length).reshape(batch, 1)
    flat = values.reshape((batch * length,) + values.shape[2:])
    picked = ops.gather(flat, (index + offsets).reshape(-1), 0)
    return picked.reshape(index.shape + values.shape[2:])


def select_class(values, classes):
    """values (N, K, ...), classes (N,) int in 0..K-1 -> (N, ...): ``values[n, classes[n]]``, as a
    one-hot product (static shapes, gradient only into the selected channel)."""
    num_classes = values.shape[1]
    one_hot = ops.one_hot(classes, num_classes, ms.Tensor(1.0, values.dtype), ms.Tensor(0.0, values.dtype))
    return (values * one_hot.reshape(one_hot.shape + (1,) * (len(values.shape) - 2))).sum(1)
