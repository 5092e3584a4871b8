"""The 80 COCO 2017 categories, as the published COCO models were trained on them: names and
category ids in increasing id order (mindseg's COCO reader numbers classes 0..79 in that order).
Checkpoints converted for 80 classes carry these, so that fine-tuning matches classes by name."""

COCO_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in COCO_UNUSED_IDS)
COCO_CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush")
assert len(COCO_CLASS_NAMES) == len(COCO_CATEGORY_IDS) == 80


def coco_class_info(num_classes):
    """``{"num_classes", "class_names", "category_ids"}`` of COCO for an 80-class model, else None
    (a converted model of another class count names no classes)."""
    if num_classes != len(COCO_CLASS_NAMES):
        return None
    return {"num_classes": num_classes, "class_names": list(COCO_CLASS_NAMES),
            "category_ids": list(COCO_CATEGORY_IDS)}
