"""Instance masks of CenterMask (point representation): local shape x global saliency.

Shape shorthand: B images, N objects per image (G gt in training, D detections at test), K
classes, S the local shape size (32), R the mask grid over each box (``mask_resolution``), Ho Wo
the output map at ``stride``.

An object's mask on an R x R grid over its box is ``sigmoid(local shape)`` (its S^2 channels at
the object's centre pixel, reshaped S x S and resized to R x R) times ``sigmoid(saliency)`` (the
saliency map of its class read at the R x R bin centres of the box).
"""
import mindspore as ms
import mindspore.numpy as mnp
import mindspore.ops as ops

from mindseg.models.layers.gather import gather_rows


def gather_at(maps, index):
    """maps (B, C, Ho, Wo), index (B, N) flat ``y * Wo + x`` -> (B, N, C): each map's C values at
    each index."""
    batch, channels = maps.shape[0], maps.shape[1]
    flat = maps.reshape(batch, channels, -1).transpose(0, 2, 1)
    return gather_rows(flat, index.astype(ms.int32))


def local_shapes(shape_logits, index, resolution):
    """shape_logits (B, S^2, Ho, Wo), index (B, N) -> (B, N, R, R) local-shape logits: the S^2
    vector at each centre as S x S, bilinearly resized (half-pixel centres) to R x R."""
    batch, num = index.shape
    size = int(round(shape_logits.shape[1] ** 0.5))
    shapes = gather_at(shape_logits, index).reshape(batch * num, 1, size, size)
    if resolution != size:
        shapes = ops.interpolate(shapes, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return shapes.reshape(batch, num, resolution, resolution)


def _bilinear_weights(coords, size):
    """(M, R) sample positions in map pixels (pixel centres at +0.5) -> (M, R, size): each
    sample's bilinear weights over the ``size`` pixels of its axis, positions clamped to the border
    pixel centres (grid_sample's ``align_corners=False, padding_mode='border'``)."""
    pos = ops.clamp(coords - 0.5, 0.0, float(size - 1))
    low = ops.floor(pos)
    frac = pos - low
    high = ops.minimum(low + 1.0, float(size - 1))
    pixels = mnp.arange(size, dtype=ms.float32).reshape(1, 1, size)
    return ((pixels == low.expand_dims(-1)).astype(ms.float32) * (1.0 - frac).expand_dims(-1)
            + (pixels == high.expand_dims(-1)).astype(ms.float32) * frac.expand_dims(-1))


def crop_saliency(saliency_logits, classes, boxes, stride, resolution):
    """saliency_logits (B, K, Ho, Wo), classes (B, N) int, boxes (B, N, 4) pixels -> (B, N, R, R):
    the map of each object's class read bilinearly at the R x R bin centres of its box (map
    coordinates clamped to the border pixel centres).

    The sampling grid is separable (one row of x and one column of y per box), so the crop is
    ``Wy @ map @ Wx^T`` with (R, Ho) and (R, Wo) bilinear weight matrices: ops.grid_sample's
    result and gradients, from primitives every backend documents (grid_sample's backward is not
    documented on Ascend; docs/platforms.md)."""
    batch, num_classes, out_h, out_w = saliency_logits.shape
    num = classes.shape[1]
    pick = (mnp.arange(batch, dtype=ms.int32).reshape(batch, 1) * num_classes
            + ops.clamp(classes.astype(ms.int32), 0, num_classes - 1)).reshape(-1)
    maps = ops.gather(saliency_logits.reshape(batch * num_classes, out_h, out_w), pick, 0)
    cell = (mnp.arange(resolution, dtype=ms.float32) + 0.5) / resolution
    boxes = boxes.reshape(batch * num, 4).astype(ms.float32) / stride
    xs = boxes[:, 0:1] + cell.reshape(1, -1) * (boxes[:, 2:3] - boxes[:, 0:1])
    ys = boxes[:, 1:2] + cell.reshape(1, -1) * (boxes[:, 3:4] - boxes[:, 1:2])
    rows = ops.bmm(_bilinear_weights(ys, out_h), maps)
    crops = ops.bmm(rows, _bilinear_weights(xs, out_w).transpose(0, 2, 1))
    return crops.reshape(batch, num, resolution, resolution)


def assemble_masks(shape_logits, saliency_logits, index, classes, boxes, *, stride, resolution):
    """(B, N, R, R) local-shape logits and saliency logits of each object (see the module doc);
    the mask probability is ``sigmoid(first) * sigmoid(second)``."""
    return (local_shapes(shape_logits, index, resolution),
            crop_saliency(saliency_logits, classes, boxes, stride, resolution))
