"""CenterNet targets on the stride-s output map (device, static shapes).

Shape shorthand: B images, G padded gt (``data.max_instances``), K classes, Ho Wo the output map
(canvas / stride). Boxes are continuous pixels (docs/contracts.md); on the output map a box
spans ``box / stride`` and output pixel i covers [i, i + 1).

Per gt object: the centre ``c = box centre / stride``, its pixel ``floor(c)`` (the peak of a
Gaussian of CenterNet's radius with ``min_overlap`` 0.7 in the heatmap of its class), the offset
``c - floor(c)`` and the size ``(w, h) / stride``, all read at that one pixel.
"""
import mindspore as ms
import mindspore.numpy as mnp
import mindspore.ops as ops


def gaussian_radius(height, width, min_overlap=0.7):
    """CenterNet's ``gaussian_radius`` (CornerNet's three cases, as CenterNet writes them),
    elementwise on Tensors of box heights and widths in output pixels."""
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + ops.sqrt(ops.clamp(b1 * b1 - 4 * c1, min=0.0))) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + ops.sqrt(ops.clamp(b2 * b2 - 16 * c2, min=0.0))) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + ops.sqrt(ops.clamp(b3 * b3 - 4 * a3 * c3, min=0.0))) / 2
    return ops.minimum(ops.minimum(r1, r2), r3)


def centernet_targets(gt_boxes, gt_labels, gt_valid, *, num_classes, output_shape, stride, min_overlap=0.7):
    """gt_boxes (B, G, 4) pixels, gt_labels (B, G) int, gt_valid (B, G) bool ->

    heatmap (B, K, Ho, Wo) float32: per class the max of its objects' Gaussians (1 at each centre);
    center_index (B, G) int32: ``y * Wo + x`` of each object's centre pixel (0 for padding);
    offset (B, G, 2) and size (B, G, 2) float32: (dx, dy) and (w, h) in output pixels;
    obj_valid (B, G) bool: real objects with a non-empty box on the map.
    """
    out_h, out_w = output_shape
    batch, num_gt = gt_boxes.shape[0], gt_boxes.shape[1]
    limits = ms.Tensor([out_w, out_h, out_w, out_h], ms.float32)
    boxes = ops.minimum(ops.clamp(gt_boxes.astype(ms.float32) / stride, min=0.0), limits)
    width, height = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    obj_valid = ops.logical_and(gt_valid, ops.logical_and(width > 0, height > 0))
    center = ops.stack([(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2], -1)
    cell_max = ms.Tensor([out_w - 1, out_h - 1], ms.float32)
    center_int = ops.minimum(ops.floor(center), cell_max)
    valid_f = obj_valid.astype(ms.float32)
    offset = (center - center_int) * valid_f.expand_dims(-1)
    size = ops.stack([width, height], -1) * valid_f.expand_dims(-1)
    cx, cy = center_int[..., 0], center_int[..., 1]
    center_index = (cy * out_w + cx).astype(ms.int32) * obj_valid.astype(ms.int32)

    radius = ops.clamp(ops.floor(gaussian_radius(ops.ceil(height), ops.ceil(width), min_overlap)), min=0.0)
    sigma = (2 * radius + 1) / 6
    dx = mnp.arange(out_w, dtype=ms.float32).reshape(1, 1, 1, out_w) - cx.reshape(batch, num_gt, 1, 1)
    dy = mnp.arange(out_h, dtype=ms.float32).reshape(1, 1, out_h, 1) - cy.reshape(batch, num_gt, 1, 1)
    r = radius.reshape(batch, num_gt, 1, 1)
    inside = ops.logical_and(ops.abs(dx) <= r, ops.abs(dy) <= r).astype(ms.float32)
    gauss = ops.exp(-(dx * dx + dy * dy) / (2 * (sigma * sigma).reshape(batch, num_gt, 1, 1))) * inside
    gauss = gauss * valid_f.reshape(batch, num_gt, 1, 1)
    # per class the max over its objects: one segment per (image, class)
    segment = (mnp.arange(batch, dtype=ms.int32).reshape(batch, 1) * num_classes
               + ops.clamp(gt_labels.astype(ms.int32), 0, num_classes - 1)).reshape(-1)
    heatmap = ops.unsorted_segment_max(gauss.reshape(batch * num_gt, out_h * out_w), segment, batch * num_classes)
    heatmap = ops.clamp(heatmap, min=0.0).reshape(batch, num_classes, out_h, out_w)
    return (ops.stop_gradient(heatmap), ops.stop_gradient(center_index), ops.stop_gradient(offset),
            ops.stop_gradient(size), obj_valid)
