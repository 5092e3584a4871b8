"""COCO evaluation with pycocotools: result JSON, AP metrics in percent, per-class AP table.

Results are COCO result dicts with the original category ids:
``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` plus ``"segmentation"`` (RLE with
``counts`` as str) for segm. Sharded evaluation: each rank writes its part with
:func:`write_results`, rank 0 reads them back with :func:`merge_results`.
"""
import contextlib
import glob
import io
import json
import os
import time

import numpy as np

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IOU_TYPES = ("bbox", "segm")


def _jsonable(res):
    """A result dict with RLE ``counts`` as str (pycocotools' encode gives bytes)."""
    seg = res.get("segmentation")
    if isinstance(seg, dict) and isinstance(seg.get("counts"), bytes):
        return dict(res, segmentation=dict(seg, counts=seg["counts"].decode("ascii")))
    return res


def _to_builtin(value):
    """json.dump fallback for numpy scalars and arrays in result dicts."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} into a COCO result JSON")


def write_results(results, path):
    """Write a list of result dicts as JSON."""
    serialisable = [_jsonable(res) for res in results]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(serialisable, f, default=_to_builtin)
    return path


def merge_results(paths_or_pattern):
    """Concatenate per-rank result files (a list of paths or a glob pattern), dropping duplicate
    (image_id, category_id, bbox, score) entries from images that several shards evaluated."""
    paths = sorted(glob.glob(paths_or_pattern)) if isinstance(paths_or_pattern, str) \
        else list(paths_or_pattern)
    if not paths:
        raise FileNotFoundError(f"no result files match {paths_or_pattern!r}")
    merged, seen = [], set()
    for path in paths:
        with open(path, "r", encoding="utf-8") as f:
            part = json.load(f)
        if not isinstance(part, list):
            raise ValueError(f"{path}: expected a JSON list of COCO results")
        for res in part:
            key = (res["image_id"], res["category_id"], tuple(np.round(res["bbox"], 3)),
                   round(float(res["score"]), 6))
            if key not in seen:
                seen.add(key)
                merged.append(res)
    return merged


def _per_class_ap(coco_eval, coco_gt):
    """AP (IoU .50:.95, all areas, max dets 100) per category name, in percent; nan if no gt."""
    precision = coco_eval.eval["precision"]  # (T iou, R recall, K cat, A area, M maxdet)
    table = {}
    for k, cat_id in enumerate(coco_eval.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        name = coco_gt.cats[int(cat_id)]["name"]
        table[name] = float(values.mean() * 100) if values.size else float("nan")
    return table


def format_class_table(per_class, columns=3):
    """Per-class AP as a plain text table, ``columns`` (name, AP) pairs per row."""
    items = [(name, "nan" if np.isnan(ap) else f"{ap:.2f}") for name, ap in per_class.items()]
    width = max([len(n) for n, _ in items] + [8])
    lines = []
    for start in range(0, len(items), columns):
        row = items[start:start + columns]
        lines.append("  ".join(f"{n:<{width}} {ap:>6}" for n, ap in row))
    return "\n".join(lines)


_MAX_NAMED = 20


def _evaluated_images(coco_gt, image_ids, log):
    """The image ids COCOeval scores: those evaluated (all when ``image_ids`` is None). The
    others (missing or unreadable images) are named, and their ground truth left out: an image
    the model never saw must not count as missed detections."""
    all_ids = sorted(coco_gt.getImgIds())
    if image_ids is None:
        return all_ids
    seen = set(int(i) for i in image_ids)
    left_out = [i for i in all_ids if i not in seen]
    for image_id in left_out[:_MAX_NAMED]:
        log(f"not evaluated: image {image_id} ({coco_gt.imgs[image_id].get('file_name', '?')}) "
            f"could not be read; its {len(coco_gt.getAnnIds(imgIds=[image_id]))} ground-truth "
            f"annotations are left out of COCOeval")
    if len(left_out) > _MAX_NAMED:
        log(f"not evaluated: {len(left_out) - _MAX_NAMED} more images")
    if left_out:
        log(f"evaluated {len(all_ids) - len(left_out)} of the {len(all_ids)} images of the "
            f"annotation file ({len(left_out)} left out)")
    return [i for i in all_ids if i in seen]


def coco_ground_truth(ann_file, log=print):
    """The pycocotools index of ``ann_file``: a COCO-format dict, or a file read as the data
    loader keeps it (:func:`mindseg.dataset.coco.ground_truth_of`), so that entries it skips,
    such as a second image with the same id, do not come back, and a duplicate annotation id
    does not hide an annotation."""
    from pycocotools.coco import COCO
    if isinstance(ann_file, dict):
        data = ann_file
    else:
        from mindseg.dataset.coco import ground_truth_of
        from mindseg.dataset.problems import summarize_problems
        data, problems = ground_truth_of(ann_file)
        if problems:
            log(f"COCOeval's ground truth keeps what the data loader keeps of {ann_file} "
                f"({summarize_problems(problems)})")
    coco_gt = COCO()
    coco_gt.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
    return coco_gt


def evaluate_coco(results, ann_file, iou_types=IOU_TYPES, output_dir=None, log=print,
                  image_ids=None):
    """Evaluate ``results`` against the COCO annotations in ``ann_file`` (a path, read as the
    data loader keeps it, or a COCO-format dict such as ``CocoDataset.ground_truth()``);
    ``image_ids``: the images that were evaluated (the ground truth of the others is left out,
    and they are named).

    Writes ``results.json`` and ``metrics.json`` into ``output_dir`` when given. Returns
    ``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl"}}`` in percent, plus
    ``{iou_type + "_per_class": {name: AP}}``. No detections give AP 0; a metric without
    ground truth in its range (e.g. APl with no large objects) is -1, as pycocotools reports it.
    """
    from pycocotools.cocoeval import COCOeval
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou_types must be among {IOU_TYPES}, got {iou_type!r}")
    if "segm" in iou_types and any("segmentation" not in r for r in results):
        raise ValueError("segm evaluation needs a 'segmentation' in every result")
    coco_gt = coco_ground_truth(ann_file, log)
    if output_dir:
        write_results(results, os.path.join(output_dir, "results.json"))
    evaluated = _evaluated_images(coco_gt, image_ids, log)
    metrics = {}
    for iou_type in iou_types:
        if not results:
            metrics[iou_type] = {name: 0.0 for name in METRIC_NAMES}
            log(f"{iou_type}: no detections, AP 0")
            continue
        # loadRes edits its input, and takes the box area for segm when a bbox is present
        dets = [dict(_jsonable(r)) for r in results]
        if iou_type == "segm":  # CenterMask rescores masks: segm_score replaces the box score
            dets = [{**{k: v for k, v in d.items() if k not in ("bbox", "segm_score")},
                     "score": d.get("segm_score", d["score"])} for d in dets]
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(dets)
        coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
        coco_eval.params.imgIds = evaluated
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        stats = [float(s) * 100 if s >= 0 else -1.0 for s in coco_eval.stats[:6]]
        metrics[iou_type] = dict(zip(METRIC_NAMES, stats))
        per_class = _per_class_ap(coco_eval, coco_gt)
        metrics[f"{iou_type}_per_class"] = per_class
        log(f"{iou_type}:\n{summary.getvalue().rstrip()}")
        log("  ".join(f"{k} {v:.2f}" for k, v in metrics[iou_type].items()))
        log(f"{iou_type} AP per class:\n{format_class_table(per_class)}")
    if output_dir:
        with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump({k: metrics[k] for k in iou_types}, f, indent=2)
    return metrics


def gather_rank_results(results, output_dir, rank, world, timeout_s=3600.0, poll_s=0.5):
    """Sharded evaluation: every rank writes ``results_rank<r>.json``; rank 0 waits for all
    ``world`` files and returns the merged list, the other ranks return None."""
    if world == 1:
        return results
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, f"results_rank{rank}.json")
    tmp = path + f".tmp{os.getpid()}"
    write_results(results, tmp)
    os.replace(tmp, path)
    if rank != 0:
        return None
    paths = [os.path.join(output_dir, f"results_rank{r}.json") for r in range(world)]
    deadline = time.time() + timeout_s
    while not all(os.path.isfile(p) for p in paths):
        if time.time() > deadline:
            missing = [p for p in paths if not os.path.isfile(p)]
            raise TimeoutError(f"rank 0: no results from {missing} after {timeout_s:.0f} s")
        time.sleep(poll_s)
    return merge_results(paths)


def infer_results(net, dataset, postprocess, runtime, output_dir, log=print):
    """Run ``net`` (inference contract) over this rank's ``dataset``: returns ``(results, image_ids)``
    of every rank on rank 0 (``image_ids``: the images inferred), None on the others; the ranks'
    files go to ``output_dir``.

    ``postprocess(outputs, batch) -> list of COCO result dicts`` turns the network's numpy
    outputs by name (``{name: array}`` for ``net.output_names``, docs/contracts.md) and the numpy
    batch (``image_id``, ``scale``, ...) into results with original category ids.
    """
    from mindseg.engine.runners import compile_network
    from mindseg.models.outputs import named_outputs
    net.set_train(False)
    results, start, images, seen = [], time.time(), 0, []
    for batch in dataset.create_dict_iterator(num_epochs=1, output_numpy=False):
        if not images:
            compile_network(net, batch["image"], batch["image_size"])
        outputs = net(batch["image"], batch["image_size"])
        numpy_batch = {k: v.asnumpy() for k, v in batch.items()}
        results.extend(postprocess(named_outputs(net.output_names, (o.asnumpy() for o in outputs)), numpy_batch))
        images += numpy_batch["image"].shape[0]
        seen.extend(int(i) for i in numpy_batch["image_id"] if i >= 0)  # -1: a dummy row
    if runtime.is_main:
        elapsed = time.time() - start
        log(f"inference: {images} images in {elapsed:.1f} s on rank 0 "
            f"({elapsed / max(images, 1):.3f} s/image)")
    if runtime.world > 1:  # written before the results file that rank 0 waits for
        _write_json(seen, os.path.join(output_dir, f"images_rank{runtime.rank}.json"))
    merged = gather_rank_results(results, output_dir, runtime.rank, runtime.world)
    if merged is None:
        return None
    if runtime.world > 1:
        seen = set()
        for rank in range(runtime.world):
            with open(os.path.join(output_dir, f"images_rank{rank}.json"), "r", encoding="utf-8") as f:
                seen.update(json.load(f))
    return merged, seen


def run_evaluation(net, dataset, postprocess, ann_file, runtime, output_dir, log=print):
    """Run ``net`` over ``dataset`` on every rank (:func:`infer_results`) and evaluate bbox and
    segm on rank 0 (:func:`evaluate_coco`, writing into ``output_dir``). Returns the metrics on
    rank 0, None on the others."""
    inferred = infer_results(net, dataset, postprocess, runtime, output_dir, log)
    if inferred is None:
        return None
    results, image_ids = inferred
    return evaluate_coco(results, ann_file, output_dir=output_dir, log=log, image_ids=image_ids)


def _write_json(value, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + f".tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f)
    os.replace(tmp, path)


class _MainProcess:
    """The runtime of an evaluation that rank 0 runs alone (while training)."""
    rank, world, is_main = 0, 1, True


def val_evaluator(cfg, category_ids, output_dir):
    """``evaluate(net) -> metrics``: the val split of ``cfg`` through eval.py's pipeline,
    postprocess and COCOeval, in this process alone (evaluation while training). The val
    annotations must have the training classes (``category_ids``). Rank files and results go to
    ``output_dir``; the log of each evaluation is kept out of the training log."""
    from mindseg.dataset.pipeline import create_dataset, dataset_info
    from mindseg.dataset.sources import split_paths
    ann_file, _ = split_paths(cfg, "val")
    val_ids = [int(c) for c in dataset_info(cfg, "val")["category_ids"]]
    if val_ids != [int(c) for c in category_ids]:
        raise ValueError(f"{ann_file}: its category ids {val_ids} are not the training set's "
                         f"{[int(c) for c in category_ids]}; evaluation while training needs the same classes")

    from mindseg.dataset.coco import ground_truth_of
    ground_truth, _ = ground_truth_of(ann_file)  # read once for every evaluation of the run

    def evaluate(net):
        dataset = create_dataset(cfg, "val", 0, 1)
        postprocess = coco_results_fn(category_ids, net.mask_threshold)
        return run_evaluation(net, dataset, postprocess, ground_truth, _MainProcess, output_dir,
                              log=lambda *args: None)
    return evaluate


def coco_results_fn(category_ids, mask_threshold=0.5):
    """The ``postprocess(outputs, batch)`` of :func:`mindseg.engine.evaluator.run_evaluation`:
    COCO results of the real images of a batch (dummy rows, image_id -1, are dropped) through
    :func:`mindseg.models.postprocess.batch_coco_results`. The original size is recovered from
    the batch as ``image_size / scale``."""
    from mindseg.models.postprocess import batch_coco_results

    def postprocess(outputs, batch):
        real = batch["image_id"] >= 0
        original_sizes = np.round(batch["image_size"] / batch["scale"]).astype(np.int64)
        return batch_coco_results({name: value[real] for name, value in outputs.items()}, batch["scale"][real],
                                  original_sizes[real], batch["image_id"][real], category_ids,
                                  mask_threshold=mask_threshold)
    return postprocess
