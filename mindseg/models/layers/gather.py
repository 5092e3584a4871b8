"""Per-image gathers on padded batches: the static-shape replacement for boolean indexing."""
import mindspore.numpy as mnp
import mindspore.ops as ops


def gather_rows(values, index):
    """values (B, N, ...), index (B, S) int -> (B, S, ...): ``values[b, index[b, s]]``."""
    batch, length = values.shape[0], values.shape[1]
    offsets = (mnp.arange(batch, dtype=index.dtype) * length).reshape(batch, 1)
    flat = values.reshape((batch * length,) + values.shape[2:])
    picked = ops.gather(flat, (index + offsets).reshape(-1), 0)
    return picked.reshape(index.shape + values.shape[2:])

