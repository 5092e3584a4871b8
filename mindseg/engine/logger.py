"""Logging for training and evaluation: rank 0 logs to the console and to ``output_dir``."""
import logging
import os
import sys

LOGGER_NAME = "mindseg"


def setup_logger(output_dir=None, rank=0, filename="train.log", name=LOGGER_NAME):
    """Return the ``mindseg`` logger: INFO on rank 0 (console + ``output_dir/filename``),
    WARNING only on the other ranks, which never write files."""
    logger = logging.getLogger(name)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    fmt = logging.Formatter(f"[%(asctime)s rank{rank}] %(message)s", "%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if rank == 0 and output_dir:
        os.makedirs(output_dir, exist_ok=True)
        to_file = logging.FileHandler(os.path.join(output_dir, filename), encoding="utf-8")
        to_file.setFormatter(fmt)
        logger.addHandler(to_file)
    return logger


def format_duration(seconds):
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:d}:{minutes:02d}:{secs:02d}"
    return f"{days}d {clock}" if days else clock
