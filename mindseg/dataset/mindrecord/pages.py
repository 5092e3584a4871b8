"""MindRecord page and header sizes for a conversion, from a simulation of how FileWriter fills
the pages of each shard (every page is padded to the page size)."""
import os

import numpy as np

from mindseg.dataset.coco import DataError

_WRITE_BATCH = 64  # rows per write_raw_data call, rounded to a multiple of the shard count


def blob_row_bytes(record):
    """Bytes of a record's row in a MindRecord blob page: 8 + (8 + data) per array/bytes field."""
    segms = record["segms"]
    num = len(record["labels"])
    parts = sum(len(s) for s in segms if isinstance(s, list))
    coords = sum(len(p) for s in segms if isinstance(s, list) for p in s)
    rles = [len(s["counts"]) for s in segms if isinstance(s, dict)]
    data = (os.path.getsize(record["file_path"]) + 4 * (4 * num + 1) + 3 * 4 * (num + 1)
            + 4 * (parts + 1) + 8 * (coords + 1) + 4 * (len(rles) + 1) + sum(rles) + 1)
    return 8 + 8 * 9 + data


def write_batch(num_shards):
    return num_shards * max(1, _WRITE_BATCH // num_shards)


def rows_of_shards(row_bytes, num_shards, batch):
    """Row sizes per shard as FileWriter spreads each ``write_raw_data`` call: contiguous
    blocks of ``len(call) // num_shards`` rows, one more for the first ``len(call) % num_shards``
    shards (measured; exact for the full calls, whose length is a multiple of the shards)."""
    shards = [[] for _ in range(num_shards)]
    for start in range(0, len(row_bytes), batch):
        rows = row_bytes[start:start + batch]
        block, extra = divmod(len(rows), num_shards)
        begin = 0
        for shard in range(num_shards):
            end = begin + block + (shard < extra)
            shards[shard].extend(rows[begin:end])
            begin = end
    return shards


def padded_bytes(rows, page):
    """Bytes of the pages of a shard holding ``rows`` (in order), each padded to ``page``.

    Blob pages fill greedily across ``write_raw_data`` calls. The raw page (the small columns)
    takes the slot after the first call's blob pages: it is padded too unless it ends the file,
    which is certain only when one blob page holds the whole shard.
    """
    pages, used = 1, 0
    for size in rows:
        if used + size > page:
            pages, used = pages + 1, 0
        used += size
    return (pages + (pages > 1)) * page


_MIN_PAGE, _MAX_PAGE = 1 << 15, 1 << 25  # MindRecord allows 256 MB; 32 MB is its default
_SIMULATED_ROWS = 20000


def page_and_header_size(row_bytes, num_shards, batch=None):
    """MindRecord page and header sizes that keep padding small.

    Every page, the last blob page included, is padded to the page size, so small shards can
    lose a third of their size to padding with a fixed page size. Up to ``_SIMULATED_ROWS`` rows the
    page size is chosen by simulating the page filling over a grid of sizes (up to one page per
    shard); beyond, a page holds ~sqrt(rows per shard) rows, which balances
    the half row lost per page against the half page lost at the end (< 1% at COCO sizes).
    The header lists the pages (~190 bytes each, measured; 512 reserved).
    """
    batch = batch or write_batch(num_shards)
    max_row = max(row_bytes)
    smallest = max(max_row + 64, _MIN_PAGE)
    shards = rows_of_shards(row_bytes, num_shards, batch)
    if len(row_bytes) <= _SIMULATED_ROWS:
        largest = max(max(sum(rows) for rows in shards), smallest)
        points = int(np.clip(4_000_000 // len(row_bytes), 48, 400))  # ~1 s of simulation
        grid = np.unique(np.geomspace(smallest, largest, points))
        grid = grid[(grid >= smallest) & (grid <= max(_MAX_PAGE, smallest))].astype(np.int64)
        cost = [sum(padded_bytes(rows, int(page)) for rows in shards) for page in grid]
        page = int(grid[int(np.argmin(cost))])
    else:
        rows_per_page = int(np.clip(np.sqrt(len(row_bytes) / num_shards), 4, 64))
        page = int(max(rows_per_page * float(np.mean(row_bytes)), smallest))
    page = -(-min(page, max(_MAX_PAGE, smallest)) // 8) * 8
    if page > 1 << 28:
        raise DataError(f"an image row of {max_row} bytes does not fit MindRecord's largest "
                        f"page (256 MB)")
    blob_pages = max(padded_bytes(rows, page) // page for rows in shards)  # + the raw page
    raw_pages = max(len(rows) for rows in shards) * 256 // page + 1
    header = 1 << int(np.ceil(np.log2(max(1 << 14, 8192 + 512 * (blob_pages + raw_pages)))))
    return page, min(header, 1 << 27)
