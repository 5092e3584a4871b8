"""COCO -> MindRecord shards, and MindRecord rows back to records.

Files of one conversion with output prefix ``P`` (e.g. ``<dataset_dir>/mindrecord/train2017``):
``P.mindrecord`` (one shard) or ``P.mindrecord0 .. P.mindrecord<N-1>``, each with MindRecord's
``.db`` index beside it, and ``P.meta.json`` (class names, category ids, counts). The shards are
written into a hidden folder ``.<name>.tmp-<pid>`` next to them and moved out only when
MindRecord has committed them (shard 0, the file MindDataset opens, last); ``P.meta.json`` is
written after that, atomically, and is the mark of a finished conversion: :func:`find_shards`
refuses a prefix without it. MindRecord's headers name the shards by base name only, so moving
them keeps them readable. A temporary folder left by a killed conversion is removed by the next
conversion to the same prefix once its process is gone.

One concept per module: :mod:`.encoding` (a record as one row, and back), :mod:`.paths` (where a
conversion's files are, its meta), :mod:`.pages` (MindRecord page and header sizes from a
simulation of how pages fill), :mod:`.publish` (the temporary folder moved into place) and
:mod:`.convert` (the conversion driver).
"""
from mindseg.dataset.mindrecord.convert import convert_coco_to_mindrecord
from mindseg.dataset.mindrecord.encoding import (ENCODING_VERSION, MINDRECORD_COLUMNS, SCHEMA,
                                                 record_to_row, row_to_record)
from mindseg.dataset.mindrecord.paths import find_shards, load_meta, meta_path, shard_names

__all__ = ["ENCODING_VERSION", "MINDRECORD_COLUMNS", "SCHEMA", "convert_coco_to_mindrecord",
           "find_shards", "load_meta", "meta_path", "record_to_row", "row_to_record", "shard_names"]
