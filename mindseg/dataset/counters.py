"""Counts of the samples the pipeline skipped (unreadable or failing images) and of those that
lost gt to ``max_instances``, shared with the forked worker processes so that the main process
sees the workers' counts."""
import logging
import multiprocessing

logger = logging.getLogger(__name__)

_BAD_SAMPLES = multiprocessing.Value("l", 0)
_TRUNCATED_IMAGES = multiprocessing.Value("l", 0)
_truncation_logged = False


def bad_sample_count():
    """How many samples were skipped (unreadable or failing images) in this process tree."""
    return _BAD_SAMPLES.value


def truncated_image_count():
    """How many samples had more than ``max_instances`` gt and lost their smallest ones."""
    return _TRUNCATED_IMAGES.value


def count_bad_sample():
    """Count one skipped sample; returns the count so far."""
    with _BAD_SAMPLES.get_lock():
        _BAD_SAMPLES.value += 1
        return _BAD_SAMPLES.value


def count_truncation(image_id, name, count, max_instances):
    """Count one image cut to ``max_instances`` gt; the first one is logged."""
    global _truncation_logged
    with _TRUNCATED_IMAGES.get_lock():
        _TRUNCATED_IMAGES.value += 1
    if not _truncation_logged:
        _truncation_logged = True
        logger.warning("image %s (%s) has %d instances; only the %d largest are kept (logged once; "
                       "see truncated_image_count())", image_id, name, count, max_instances)
