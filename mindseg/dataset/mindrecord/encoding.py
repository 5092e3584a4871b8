"""A COCO record as one MindRecord row, and back.

One row per image; every image of the split is stored (also those without annotations) with all
its annotations (crowd ones flagged): the reader drops crowd regions and empty images per config
(:func:`row_to_record` with ``crowd``, and the ``num_instances`` / ``num_crowd`` columns for a
dataset filter). Row encoding (version 1), N annotations of which P polygon parts in all:

=============  =========  ============================================================
column         type       content
=============  =========  ============================================================
image_id       int64      COCO image id
file_name      string     as in the annotation file
height, width  int32      of the image
image_bytes    bytes      the image file as stored, never re-encoded
num_instances  int32      N, crowd included
num_crowd      int32      crowd annotations among N
boxes          float32    (N*4) xyxy pixels
labels         int32      (N) contiguous labels 0..K-1 (``P.meta.json`` maps them to ids)
iscrowd        int32      (N) 0/1
segm_parts     int32      (N) polygon parts of each annotation; 0: the annotation is an RLE
poly_lengths   int32      (P) coordinates (2 x points) in each polygon part, in order
poly_coords    float32    all polygon coordinates x0 y0 x1 y1 ..., concatenated (the COCO reader
                          rounds polygons to float32 too, so both sources agree exactly)
rle_lengths    int32      length of each RLE annotation's compressed counts, in order
rle_counts     bytes      pycocotools' compressed counts of all RLEs, concatenated; the
                          mask size is the image's (height, width)
=============  =========  ============================================================

Every array column and ``rle_counts`` carry one extra trailing element (pad) that the reader
drops: MindRecord 2.10 returns a zero-length array column as a 0-d array of garbage, and an
empty bytes column as one NUL byte.
"""
import numpy as np

from mindseg.dataset.coco import DataError, drop_crowd

ENCODING_VERSION = 1
MINDRECORD_COLUMNS = ["image_id", "file_name", "height", "width", "image_bytes",
                      "num_instances", "num_crowd", "boxes", "labels", "iscrowd", "segm_parts",
                      "poly_lengths", "poly_coords", "rle_lengths", "rle_counts"]
SCHEMA = {
    "image_id": {"type": "int64"},
    "file_name": {"type": "string"},
    "height": {"type": "int32"},
    "width": {"type": "int32"},
    "image_bytes": {"type": "bytes"},
    "num_instances": {"type": "int32"},
    "num_crowd": {"type": "int32"},
    "boxes": {"type": "float32", "shape": [-1]},
    "labels": {"type": "int32", "shape": [-1]},
    "iscrowd": {"type": "int32", "shape": [-1]},
    "segm_parts": {"type": "int32", "shape": [-1]},
    "poly_lengths": {"type": "int32", "shape": [-1]},
    "poly_coords": {"type": "float32", "shape": [-1]},
    "rle_lengths": {"type": "int32", "shape": [-1]},
    "rle_counts": {"type": "bytes"},
}
_PAD_BYTE = b"|"


def _padded(values, dtype):
    return np.append(np.asarray(values, dtype).reshape(-1), np.zeros(1, dtype))


def record_to_row(record, image_bytes):
    """The MindRecord row of one record (see the module docstring for the encoding)."""
    segm_parts, poly_lengths, poly_coords, rle_lengths, rle_counts = [], [], [], [], []
    for segm in record["segms"]:
        if isinstance(segm, dict):
            counts = segm["counts"]
            counts = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
            segm_parts.append(0)
            rle_lengths.append(len(counts))
            rle_counts.append(counts)
        else:
            segm_parts.append(len(segm))
            for poly in segm:
                poly_lengths.append(len(poly))
                poly_coords.extend(poly)
    iscrowd = np.asarray(record["iscrowd"], np.int32)
    return {
        "image_id": int(record["image_id"]),
        "file_name": str(record["file_name"]),
        "height": int(record["height"]),
        "width": int(record["width"]),
        "image_bytes": bytes(image_bytes),
        "num_instances": int(len(record["labels"])),
        "num_crowd": int(iscrowd.sum()),
        "boxes": _padded(record["boxes"], np.float32),
        "labels": _padded(record["labels"], np.int32),
        "iscrowd": _padded(iscrowd, np.int32),
        "segm_parts": _padded(segm_parts, np.int32),
        "poly_lengths": _padded(poly_lengths, np.int32),
        "poly_coords": _padded(poly_coords, np.float32),
        "rle_lengths": _padded(rle_lengths, np.int32),
        "rle_counts": b"".join(rle_counts) + _PAD_BYTE,
    }


def _unpad(value, dtype):
    return np.asarray(value).astype(dtype, copy=False).reshape(-1)[:-1]


def _as_bytes(value):
    """Bytes of a bytes column: Python bytes, or the ``|S<n>`` array MindDataset gives."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return np.asarray(value).tobytes()


def _as_str(value):
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8")
    item = np.asarray(value).reshape(-1)[0].item()
    return item.decode("utf-8") if isinstance(item, bytes) else str(item)


def _as_int(value):
    return int(np.asarray(value).reshape(-1)[0])


def row_to_record(row, crowd="ignore"):
    """The record (``docs/contracts.md``, with ``image_bytes``) of one MindRecord row.

    ``row`` maps column names to what MindDataset yields (numpy arrays, ``|S<n>`` arrays for
    bytes) or to the values :func:`record_to_row` wrote. ``crowd="drop"`` removes crowd
    annotations, as :class:`~mindseg.dataset.coco.CocoDataset` does.
    """
    num = _as_int(row["num_instances"])
    height, width = _as_int(row["height"]), _as_int(row["width"])
    boxes = _unpad(row["boxes"], np.float32).reshape(-1, 4)
    labels = _unpad(row["labels"], np.int32)
    iscrowd = _unpad(row["iscrowd"], np.int32).astype(np.uint8)
    segm_parts = _unpad(row["segm_parts"], np.int32)
    poly_lengths = _unpad(row["poly_lengths"], np.int32)
    poly_coords = _unpad(row["poly_coords"], np.float32)
    rle_lengths = _unpad(row["rle_lengths"], np.int32)
    rle_counts = _as_bytes(row["rle_counts"])[:-1]
    if not (len(boxes) == len(labels) == len(iscrowd) == len(segm_parts) == num):
        raise DataError(f"image {_as_int(row['image_id'])}: MindRecord row has inconsistent "
                        f"annotation arrays (num_instances {num})")
    segms, part, coord, rle, offset = [], 0, 0, 0, 0
    for parts in segm_parts:
        if parts == 0:
            size = int(rle_lengths[rle])
            segms.append({"size": [height, width], "counts": rle_counts[offset:offset + size]})
            offset += size
            rle += 1
            continue
        polys = []
        for length in poly_lengths[part:part + parts]:
            polys.append(poly_coords[coord:coord + length].tolist())
            coord += int(length)
        part += int(parts)
        segms.append(polys)
    record = {
        "image_id": _as_int(row["image_id"]),
        "file_name": _as_str(row["file_name"]),
        "height": height,
        "width": width,
        "image_bytes": _as_bytes(row["image_bytes"]),
        "boxes": boxes,
        "labels": labels,
        "iscrowd": iscrowd,
        "segms": segms,
    }
    return drop_crowd(record) if crowd == "drop" else record
