"""Stage-by-stage timing for ``benchmark.py --breakdown``.

A model's forward pass is cut into the stages its construct runs (backbone, FPN, RPN head, RPN
top-k / decode / NMS, RoI sampling, box and mask branches, post-processing). Each stage is a
function of earlier stages' outputs, jitted on its own in GRAPH mode (a plain call in PYNATIVE),
and timed after a warm-up. The stage lists only call the model's own sub-cells and functions in
the order its construct does; ``check_against`` compares the staged result with the whole
network's, so a list that drifts from the model is caught.

Shape shorthand as in the models: B images, L levels, P proposals, R RoIs, D detections.
"""
import collections
import statistics
import time

import numpy as np
import mindspore as ms
import mindspore.ops as ops

from mindseg.models import box_ops
from mindseg.models.dense_heads.fcos import fcos_candidates
from mindseg.models.layers import nms
from mindseg.models.layers.gather import gather_rows
from mindseg.models.postprocess import batch_coco_results
from mindseg.models.roi_heads.box_head import box_head_inference, box_head_losses
from mindseg.models.roi_heads.mask_head import fg_slots, mask_branch_inference, mask_branch_loss
from mindseg.models.roi_heads.maskiou_head import (gt_mask_areas, mask_scores, maskiou_loss,
                                                   maskiou_targets)
from mindseg.models.roi_heads.sampling import label_and_sample_proposals
from mindseg.models.dense_heads.rpn import rpn_losses

Stage = collections.namedtuple("Stage", "name inputs outputs fn host")


def stage(name, inputs, outputs, host=False):
    """Decorator: ``fn(*inputs) -> outputs`` (a tuple, or one value for one output)."""
    return lambda fn: Stage(name, tuple(inputs.split()), tuple(outputs.split()), fn, host)


def _sync(value):
    if isinstance(value, (tuple, list)):
        for item in value:
            _sync(item)
    elif isinstance(value, ms.Tensor):
        value.asnumpy()


def run_stages(stages, state, jit):
    """Run ``stages`` once from ``state`` (dict of named inputs); returns (state, {name: s})."""
    state, times = dict(state), {}
    for st in stages:
        fn = st.fn if st.host or not jit else _jitted(st)
        start = time.perf_counter()
        out = fn(*[_variable(state[k]) for k in st.inputs])
        out = out if len(st.outputs) > 1 else (out,)
        _sync(out)
        times[st.name] = time.perf_counter() - start
        state.update(zip(st.outputs, out))
    return state, times


def _variable(value):
    """Tuples of tensors enter a jitted function as variables, not as constants (which would
    recompile the graph at every call)."""
    return ms.mutable(value) if isinstance(value, tuple) else value


_JIT_CACHE = {}


def _jitted(st):
    if id(st.fn) not in _JIT_CACHE:
        _JIT_CACHE[id(st.fn)] = ms.jit(st.fn)
    return _JIT_CACHE[id(st.fn)]


def time_stages(stages, state, jit, iters, warmup):
    """Median seconds per stage over ``iters`` runs after ``warmup``; and the last state."""
    samples = collections.defaultdict(list)
    for it in range(warmup + iters):
        final, times = run_stages(stages, state, jit)
        if it >= warmup:
            for name, value in times.items():
                samples[name].append(value)
    return {name: statistics.median(v) for name, v in samples.items()}, final


def replay_last_key(net):
    """Step the samplers' counter (``layers.step_random``) back one draw, so that the next
    training pass draws what the last staged pass drew."""
    counter = net.step_random.sample_counter
    ops.assign(counter, counter - 1)


def check_against(final, names, whole_outputs, atol=1e-3):
    """Max abs difference between the staged outputs ``names`` and the whole network's."""
    worst = 0.0
    for name, expected in zip(names, whole_outputs):
        got = final[name].asnumpy().astype(np.float64)
        worst = max(worst, float(np.abs(got - expected.asnumpy().astype(np.float64)).max(initial=0.0)))
    if worst > atol:
        raise AssertionError(f"staged outputs differ from the whole network's by {worst:.3g} "
                             f"(> {atol}): the stage list no longer follows the model")
    return worst


def host_postprocess_stage(outputs):
    @stage("host post (paste masks, RLE)", "image_size " + " ".join(outputs), "num_results", host=True)
    def run(image_size, *values):
        sizes = image_size.asnumpy()
        results = batch_coco_results(dict(zip(outputs, values)), np.ones_like(sizes), sizes,
                                     np.arange(sizes.shape[0]), list(range(10000)))
        return len(results)
    return run


def _backbone_and_fpn(net):
    @stage("backbone", "image", "c")
    def backbone(image):
        return net.backbone(image)

    @stage("fpn", "c", "features")
    def fpn(c):
        return net.fpn(c)
    return [backbone, fpn]


# ------------------------------------------------------------------------------------ Mask R-CNN

def mask_rcnn_stages(net, training):
    """Stages of ``MaskRCNN.construct``; inputs are the batch columns by name."""
    rpn, roi_heads = net.rpn, net.roi_heads
    settings = rpn.train_settings if training else rpn.test_settings
    pre_k, post_k = settings.pre_nms_topk, settings.post_nms_topk
    num_levels = len(rpn.level_anchors)

    @stage("rpn head", "features", "rpn_logits rpn_deltas")
    def rpn_head(features):
        logits, deltas = rpn.head(features)
        return tuple(logits), tuple(deltas)

    @stage("rpn top-k (alone, inside the next)", "rpn_logits", "rpn_topk")
    def rpn_topk(rpn_logits):
        return tuple(ops.topk(rpn_logits[i], min(pre_k, rpn_logits[i].shape[1]))[0] for i in range(num_levels))

    @stage("rpn top-k + decode", "rpn_logits rpn_deltas image_size", "cand_boxes cand_scores cand_valid")
    def rpn_candidates(rpn_logits, rpn_deltas, image_size):
        boxes, scores, valid = [], [], []
        for level in range(num_levels):
            logits, deltas = rpn_logits[level], rpn_deltas[level]
            top_logits, top_idx = ops.topk(logits, min(pre_k, logits.shape[1]))
            top_idx = top_idx.astype(ms.int32)
            level_boxes = settings.box_coder.decode(ops.gather(rpn.level_anchors[level], top_idx, 0),
                                               gather_rows(deltas, top_idx))
            level_boxes = box_ops.clip_boxes(level_boxes, image_size)
            boxes.append(level_boxes)
            scores.append(top_logits)
            valid.append(box_ops.nonempty(level_boxes, settings.min_box_size) & ops.isfinite(top_logits)
                         & ops.isfinite(level_boxes).all(-1))
        return tuple(boxes), tuple(scores), tuple(valid)

    @stage("rpn nms", "cand_boxes cand_scores cand_valid", "proposals proposal_valid")
    def rpn_nms(cand_boxes, cand_scores, cand_valid):
        keep_idx, keep_valid = nms.grouped_nms(list(cand_boxes), list(cand_scores), list(cand_valid),
                                               settings.nms_thresh, post_k)
        return gather_rows(ops.concat(cand_boxes, 1), keep_idx), keep_valid

    head = _backbone_and_fpn(net) + [rpn_head] + ([] if training else [rpn_topk]) + [rpn_candidates, rpn_nms]
    if training:
        return head + _mask_rcnn_train_tail(net), tuple(net.loss_names)

    @stage("box pooler + head", "features proposals", "cls_logits box_deltas")
    def box_branch(features, proposals):
        return roi_heads.box_head(roi_heads.box_pooler(features[:net.pooler_levels], proposals))

    @stage("box post (per-class decode, nms)", "cls_logits box_deltas proposals proposal_valid image_size",
           "boxes scores classes valid")
    def box_post(cls_logits, box_deltas, proposals, proposal_valid, image_size):
        return box_head_inference(cls_logits, box_deltas, proposals, proposal_valid, image_size,
                                  roi_heads.box_settings)

    @stage("mask pooler + head", "features boxes classes", "mask_probs")
    def mask_branch(features, boxes, classes):
        pooled = roi_heads.mask_pooler(features[:net.pooler_levels], boxes)
        return mask_branch_inference(roi_heads.mask_head(pooled), classes)

    outputs = net.output_names
    return head + [box_branch, box_post, mask_branch, host_postprocess_stage(outputs)], outputs


def _mask_rcnn_train_tail(net):
    rpn, roi_heads = net.rpn, net.roi_heads
    f = roi_heads.num_fg_slots

    @stage("rpn losses", "rpn_logits rpn_deltas gt_boxes gt_valid_nc key", "loss_rpn_cls loss_rpn_loc")
    def rpn_loss(rpn_logits, rpn_deltas, gt_boxes, gt_valid_nc, key):
        loss_cls, loss_loc = rpn_losses(ops.concat(rpn_logits, 1), ops.concat(rpn_deltas, 1), rpn.anchors,
                                        gt_boxes, gt_valid_nc, rpn.train_settings, key)
        weight = rpn.train_settings.loss_weight
        return loss_cls * weight, loss_loc * weight

    @stage("roi sampling", "proposals proposal_valid gt_boxes gt_labels gt_valid_nc key",
           "rois roi_valid roi_is_fg roi_gt_classes roi_gt_idx")
    def sampling(proposals, proposal_valid, gt_boxes, gt_labels, gt_valid_nc, key):
        return label_and_sample_proposals(proposals, proposal_valid, gt_boxes, gt_labels, gt_valid_nc,
                                          roi_heads.sampling, key)

    @stage("box pooler + head + loss", "features rois roi_valid roi_gt_classes roi_gt_idx gt_boxes",
           "loss_cls loss_box_reg")
    def box_loss(features, rois, roi_valid, roi_gt_classes, roi_gt_idx, gt_boxes):
        cls_logits, box_deltas = roi_heads.box_head(roi_heads.box_pooler(features[:net.pooler_levels], rois))
        return box_head_losses(cls_logits, box_deltas, rois, roi_valid, roi_gt_classes,
                               gather_rows(gt_boxes, roi_gt_idx), roi_heads.box_settings)

    @stage("mask pooler + head + targets + loss", "features rois roi_is_fg roi_gt_classes roi_gt_idx gt_boxes gt_masks",
           "loss_mask")
    def mask_loss(features, rois, roi_is_fg, roi_gt_classes, roi_gt_idx, gt_boxes, gt_masks):
        fg_rois, fg_gt_idx, fg_classes, fg = fg_slots(f, rois, roi_gt_idx, roi_gt_classes, roi_is_fg)
        logits = roi_heads.mask_head(roi_heads.mask_pooler(features[:net.pooler_levels], fg_rois))
        return mask_branch_loss(logits, fg_rois, fg_gt_idx, fg_classes, fg, gt_masks, gt_boxes)[0]

    return [_step_key(net), rpn_loss, sampling, box_loss, mask_loss]


def _step_key(net):
    @stage("sampling key", "", "key")
    def key():
        return net.step_random()
    return key


# ------------------------------------------------------------------------------------ CenterMask

def centermask_stages(net, training):
    """Stages of ``CenterMask.construct``; inputs are the batch columns by name."""
    fcos, roi_heads = net.fcos, net.roi_heads
    test = fcos.test_settings

    @stage("fcos head", "features", "cls_logits pred_ltrb ctr_logits")
    def head(features):
        return net.fcos_head(features)

    @stage("fcos top-k + decode", "cls_logits pred_ltrb ctr_logits image_size",
           "cand_boxes cand_scores cand_classes cand_valid")
    def candidates(cls_logits, pred_ltrb, ctr_logits, image_size):
        return fcos_candidates(cls_logits, pred_ltrb, ctr_logits, fcos.locations, fcos.level_sizes, image_size, test)

    @stage("fcos nms", "cand_boxes cand_scores cand_classes cand_valid", "boxes scores classes valid")
    def fcos_nms(cand_boxes, cand_scores, cand_classes, cand_valid):
        keep, keep_valid = nms.batched_nms(cand_boxes, cand_scores, cand_valid, test.nms_thresh,
                                           test.post_nms_topk, classes=cand_classes)
        keep = keep.astype(ms.int32)
        keep_float = keep_valid.astype(ms.float32)
        return (gather_rows(cand_boxes, keep) * keep_float[..., None], gather_rows(cand_scores, keep) * keep_float,
                gather_rows(cand_classes, keep) * keep_valid.astype(ms.int32), keep_valid)

    if training:
        return _backbone_and_fpn(net) + [head] + _centermask_train_tail(net), tuple(net.loss_names)

    @stage("mask pooler + head", "features boxes classes image_size", "roi_features flat_mask_probs mask_probs")
    def mask_branch(features, boxes, classes, image_size):
        roi_features = roi_heads.mask_pooler(features[:3], boxes, image_size[:, 0] * image_size[:, 1])
        probs = mask_branch_inference(roi_heads.mask_head(roi_features), classes)
        return roi_features, probs.reshape((-1,) + probs.shape[2:]), probs

    @stage("maskiou head", "roi_features flat_mask_probs classes scores", "mask_scores")
    def maskiou(roi_features, flat_mask_probs, classes, scores):
        if roi_heads.maskiou_head is None:
            return scores
        pred = roi_heads.maskiou_head(roi_features, flat_mask_probs)
        return mask_scores(pred, classes.reshape(-1), scores.reshape(-1)).reshape(scores.shape)

    outputs = net.output_names
    return (_backbone_and_fpn(net) + [head, candidates, fcos_nms, mask_branch, maskiou,
                                      host_postprocess_stage(outputs)], outputs)


def _centermask_train_tail(net):
    roi_heads = net.roi_heads
    f = roi_heads.num_fg_slots

    @stage("fcos targets + losses", "cls_logits pred_ltrb ctr_logits gt_boxes gt_labels gt_valid_nc",
           "loss_fcos_cls loss_fcos_loc loss_fcos_ctr")
    def losses(cls_logits, pred_ltrb, ctr_logits, gt_boxes, gt_labels, gt_valid_nc):
        return net.fcos.losses(cls_logits, pred_ltrb, ctr_logits, gt_boxes, gt_labels, gt_valid_nc)

    @stage("fcos proposals (top-k, decode, nms)", "cls_logits pred_ltrb ctr_logits image_size",
           "proposals proposal_valid")
    def proposals(cls_logits, pred_ltrb, ctr_logits, image_size):
        boxes, _, _, valid = net.fcos.detections(cls_logits, pred_ltrb, ctr_logits, image_size)
        return boxes, valid

    @stage("roi sampling", "proposals proposal_valid gt_boxes gt_labels gt_valid_nc key",
           "rois roi_is_fg roi_gt_classes roi_gt_idx")
    def sampling(proposals, proposal_valid, gt_boxes, gt_labels, gt_valid_nc, key):
        rois, _, is_fg, gt_classes, gt_idx = label_and_sample_proposals(
            proposals, proposal_valid, gt_boxes, gt_labels, gt_valid_nc, roi_heads.sampling, key)
        return rois, is_fg, gt_classes, gt_idx

    @stage("mask pooler + head + loss, maskiou", "features rois roi_is_fg roi_gt_classes roi_gt_idx gt_boxes "
           "gt_masks image_size", "loss_mask loss_maskiou")
    def mask_loss(features, rois, roi_is_fg, roi_gt_classes, roi_gt_idx, gt_boxes, gt_masks, image_size):
        fg_rois, fg_gt_idx, fg_classes, fg = fg_slots(f, rois, roi_gt_idx, roi_gt_classes, roi_is_fg)
        roi_features = roi_heads.mask_pooler(features[:3], fg_rois, image_size[:, 0] * image_size[:, 1])
        loss_mask, class_logits, targets = mask_branch_loss(roi_heads.mask_head(roi_features), fg_rois, fg_gt_idx,
                                                            fg_classes, fg, gt_masks, gt_boxes)
        if roi_heads.maskiou_head is None:
            return loss_mask, ops.zeros((), ms.float32)
        gt_areas = gather_rows(gt_mask_areas(gt_masks, gt_boxes), fg_gt_idx).reshape(-1)
        iou_targets = maskiou_targets(class_logits, targets, fg_rois.reshape(-1, 4), gt_areas)
        pred = roi_heads.maskiou_head(roi_features, ops.sigmoid(class_logits))
        return loss_mask, maskiou_loss(pred, fg_classes, iou_targets, fg, roi_heads.maskiou_loss_weight)

    return [losses, proposals, _step_key(net), sampling, mask_loss]


STAGES = {"mask_rcnn": mask_rcnn_stages, "centermask": centermask_stages}
