"""The ``per_batch_map`` of the pipeline: source rows -> one batch of ``SAMPLE_COLUMNS``, with
each sample's randomness from ``(seed, epoch, image_id)`` and bad samples replaced, counted and
logged (see :mod:`mindseg.dataset.pipeline`)."""
import inspect
import logging

import numpy as np

from mindseg.dataset.counters import count_bad_sample
from mindseg.dataset.sample import build_sample, dummy_sample, record_name, sample_rng

logger = logging.getLogger(__name__)

_MAX_BAD_BEFORE_FIRST_GOOD = 16


class BatchBuilder:
    """The ``per_batch_map``: rows of the source -> one batch of ``SAMPLE_COLUMNS``.

    ``load(row)`` turns one source row (a tuple of column values) into a record with
    ``image_bytes``. Picklable, so it can run in worker processes."""

    def __init__(self, load, num_columns, spec, training, seed, batch_size, start_epoch=0):
        # batch() checks the arity of per_batch_map: one parameter per column + BatchInfo.
        self.__signature__ = inspect.Signature(
            [inspect.Parameter(f"column{i}", inspect.Parameter.POSITIONAL_ONLY)
             for i in range(num_columns)] +
            [inspect.Parameter("batch_info", inspect.Parameter.POSITIONAL_ONLY)])
        self.load = load
        self.spec = spec
        self.training = training
        self.seed = seed
        self.batch_size = batch_size
        self.start_epoch = start_epoch
        self.num_good = 0
        self.num_bad = 0

    def __call__(self, *columns_and_info):
        *columns, batch_info = columns_and_info
        epoch = self.start_epoch + batch_info.get_epoch_num()
        samples = [self._sample_or_replacement(row, epoch) for row in zip(*columns)]
        good = [s for s in samples if s is not None]
        for k, sample in enumerate(samples):
            if sample is None:
                samples[k] = good[k % len(good)] if self.training and good \
                    else dummy_sample(self.spec)
        samples += [dummy_sample(self.spec)] * (self.batch_size - len(samples))
        return tuple(np.stack(column) for column in zip(*samples))

    def _sample_or_replacement(self, row, epoch):
        """The row's sample; in training a bad row is replaced by the first good one of the
        loader's ``alternatives`` (if it has random access), each with its own randomness."""
        sample = self._try_sample(row, epoch)
        if sample is None and self.training and hasattr(self.load, "alternatives"):
            for other in self.load.alternatives(row):
                sample = self._try_sample(other, epoch)
                if sample is not None:
                    break
        return sample

    def _try_sample(self, row, epoch):
        record = None
        try:
            record = self.load(row)
            rng = sample_rng(self.seed, epoch, record["image_id"]) if self.training else None
            sample = build_sample(record, self.spec, rng)
        except Exception as err:  # one bad sample must not end the epoch; counted and logged
            self.num_bad += 1
            total = count_bad_sample()
            image_id = record["image_id"] if record else "?"
            name = record_name(record) if record else self.load.describe(row)
            logger.warning("skipping image %s (%s): %s: %s [%d skipped so far]", image_id, name,
                           type(err).__name__, err, total)
            if self.num_good == 0 and self.num_bad >= _MAX_BAD_BEFORE_FIRST_GOOD:
                raise RuntimeError(f"the first {self.num_bad} samples all failed; last: "
                                   f"image {image_id} ({name})") from err
            return None
        self.num_good += 1
        return sample
