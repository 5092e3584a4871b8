"""``eval.py --draw N``: val images side by side, the ground truth on the left (masks, boxes,
class names) and the model's detections on the right (masks, boxes, class and score, those at or
above a draw threshold), drawn from the annotation file and the COCO results eval.py wrote.

The images and the ground truth are those the data loader keeps
(:meth:`mindseg.dataset.coco.CocoDataset.ground_truth`), decoded as the pipeline decodes them
(:func:`mindseg.dataset.transforms.decode_image`: stored pixel order, EXIF rotation ignored), so
the pictures show what was evaluated."""
import contextlib
import io
import os
from dataclasses import dataclass

import cv2
import numpy as np

from mindseg.utils.visualize import SCORE_THRESH, draw_instances, side_by_side


@dataclass(frozen=True)
class DrawSettings:
    """What ``eval.py --draw N --draw_thresh T`` asks for: the first ``count`` readable images,
    drawn into ``output_dir`` with the detections scored >= ``score_thresh``."""
    output_dir: str
    count: int
    score_thresh: float = SCORE_THRESH


def _instances(coco, anns, label_of, height, width, with_scores):
    """COCO annotations or results of one image -> ``(boxes (D, 4) xyxy, labels (D,), scores
    (D,) or None, masks (D, h, w) bool)``."""
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)],
                     np.float32).reshape(-1, 4)
    labels = np.array([label_of.get(int(a["category_id"]), -1) for a in anns], np.int64)
    scores = np.array([a["score"] for a in anns], np.float32) if with_scores else None
    masks = np.zeros((len(anns), height, width), bool)
    for k, ann in enumerate(anns):
        masks[k] = coco.annToMask(ann).astype(bool)
    return boxes, labels, scores, masks


def draw_val_images(ann_file, image_dir, results, class_names, category_ids, settings, log=print):
    """Draw the first ``settings.count`` readable images of ``ann_file`` (by image id) into
    ``settings.output_dir/<name>.png`` (``settings``: a :class:`DrawSettings`); ``results`` are
    COCO result dicts (original category ids, RLE masks). Images the data loader skips (missing
    file, bad or duplicate entry) are not drawn; one that does not decode to its annotated size
    is named and the next one drawn; each picture is named in one ``log`` line with its counts.
    Returns ``[(path, objects, detections)]``."""
    from pycocotools.coco import COCO
    from mindseg.dataset.coco import CocoDataset, DataError
    from mindseg.dataset.transforms import ImageDecodeError, decode_image
    output_dir, count, score_thresh = settings.output_dir, settings.count, settings.score_thresh
    dataset = CocoDataset(ann_file, image_dir, crowd="ignore", filter_empty=False)
    coco = COCO()
    coco.dataset = dataset.ground_truth()
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    label_of = {int(c): k for k, c in enumerate(category_ids)}
    by_image = {}
    for res in results:
        if res["score"] >= score_thresh:
            by_image.setdefault(int(res["image_id"]), []).append(res)
    os.makedirs(output_dir, exist_ok=True)
    drawn = []
    for record in dataset.records:
        if len(drawn) >= count:
            break
        image_id = record["image_id"]
        try:
            image = decode_image(dataset.read_image_bytes(record), record["height"],
                                 record["width"], name=record["file_name"])
        except (DataError, ImageDecodeError) as err:
            log(f"--draw: skipped image {image_id}: cannot read {record['file_path']} ({err})")
            continue
        gt = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        dets = sorted(by_image.get(image_id, []), key=lambda r: -r["score"])
        size = image.shape[:2]
        left = draw_instances(image, *_instances(coco, gt, label_of, *size, False), class_names)
        right = draw_instances(image, *_instances(coco, dets, label_of, *size, True), class_names)
        titles = (f"ground truth ({len(gt)})",
                  f"predictions ({len(dets)}, score >= {score_thresh:g})")
        picture = side_by_side(left, right, titles)
        path = os.path.join(output_dir, os.path.splitext(os.path.basename(record["file_name"]))[0]
                            + ".png")
        if not cv2.imwrite(path, picture):
            raise OSError(f"cannot write {path}")
        drawn.append((path, len(gt), len(dets)))
        log(f"drawn {path}: {len(gt)} objects, {len(dets)} detections with score >= "
            f"{score_thresh:g}")
    if len(drawn) < count:
        log(f"--draw {count}: all {len(drawn)} readable images of {ann_file} are drawn")
    return drawn
