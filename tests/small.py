"""The Mask R-CNN shapes config at the smallest size the end-to-end tests still check it: a
128 x 128 canvas, few proposals, and every box kept at test so that eval and infer have
detections to write after a few steps of training."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES_CONFIG = os.path.join(ROOT, "config", "shapes", "mask_rcnn_shapes.yml")
SHAPES_SMALL = ["data.canvas=[128,128]", "data.min_size=[128]", "data.max_size=128",
                "data.test_min_size=128", "data.test_max_size=128", "data.num_workers=0",
                "data.max_instances=8", "data.mask_crop=28",
                "model.rpn.pre_nms_topk_train=200", "model.rpn.post_nms_topk_train=64",
                "model.rpn.pre_nms_topk_test=100", "model.rpn.post_nms_topk_test=50",
                "model.roi_heads.batch_size_per_image=64", "model.roi_heads.detections_per_image=10",
                "model.roi_heads.test_topk_candidates=100", "model.roi_heads.score_thresh_test=0.0",
                "train.warmup_iters=2", "train.lr_steps=[100]", "train.base_lr=0.01",
                "train.reference_batch_size=2"]
