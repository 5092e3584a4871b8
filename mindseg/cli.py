"""Command-line flags and error reporting shared by train.py, eval.py, export.py and infer.py.

Each flag is a shortcut for a config key (``--mix True`` is ``train.mix=True``); anything else is
given as ``key=value`` overrides, before, between or after the flags
(argparse's intermixed parsing). Flags keep the names users of MindSpore model zoos type.
Every script accepts every flag, as the model zoos' scripts do: one that means nothing to the
script (``--resume_ckpt`` to eval.py, the ModelArts flags to export.py) is ignored with one line.
"""
import argparse
import collections
import contextlib
import os
import sys
import tempfile

from mindseg.config import ConfigError, apply_overrides, load_yaml_with_base, to_config

# flag -> (config key, help)
FLAG_KEYS = {
    "device_target": ("device_target", "Ascend | GPU | CPU"),
    "mode": ("mode", "graph | pynative"),
    "output_dir": ("output_dir", "where logs, checkpoints and results go"),
    "dataset_dir": ("data.dataset_dir", "COCO 2017 layout root"),
    "mix": ("train.mix", "mixed precision: float16 conv / dense layers (True | False); training adds "
                         "dynamic loss scaling"),
    "resume_ckpt": ("train.resume_ckpt", "resume weights, optimizer, step and lr from a checkpoint"),
    "pre_trained": ("train.pre_trained", "start a new run from a checkpoint's weights (fine-tuning; "
                    "classes matched by name)"),
    "overwrite": ("train.overwrite", "move the checkpoints of an earlier run in OUTPUT_DIR aside "
                  "instead of refusing to start"),
    "strict": ("data.strict", "refuse bad data (named) instead of skipping it"),
    "ckpt_path": ("eval.ckpt_path", "checkpoint to evaluate, export or run"),
    "file_format": ("export.file_format", "MINDIR | AIR"),
    "draw_thresh": ("eval.draw_thresh", "the score a detection needs to be drawn and counted as found"),
    "score_thresh": ("eval.draw_thresh", "drop weaker detections"),
    "enable_modelarts": ("enable_modelarts", "copy data from --data_url and outputs to --train_url"),
    "data_url": ("data_url", "OBS path of the dataset (ModelArts)"),
    "train_url": ("train_url", "OBS path for the outputs (ModelArts)"),
}
# switches take no value: ``--overwrite`` is ``train.overwrite=True``
SWITCHES = ("overwrite", "strict")

FLAGS_BY_SCRIPT = {
    "train": ("device_target", "mode", "output_dir", "dataset_dir", "mix", "resume_ckpt", "pre_trained",
              "overwrite", "strict", "enable_modelarts", "data_url", "train_url"),
    "eval": ("device_target", "mode", "output_dir", "dataset_dir", "mix", "ckpt_path", "strict",
             "draw_thresh", "enable_modelarts", "data_url", "train_url"),
    "export": ("device_target", "output_dir", "dataset_dir", "mix", "ckpt_path", "file_format"),
    "infer": ("device_target", "mode", "dataset_dir", "mix", "ckpt_path", "score_thresh"),
}


def build_parser(script, description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="a YAML file under config/")
    used = FLAGS_BY_SCRIPT[script]
    for flag in FLAG_KEYS:
        key, help_text = FLAG_KEYS[flag]
        text = f"{help_text} (config key {key})" if flag in used else f"ignored by {script}.py"
        switch = {"action": "store_const", "const": "True"} if flag in SWITCHES else {}
        parser.add_argument(f"--{flag}", default=None, help=text, **switch)
    parser.set_defaults(_script=script)
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, dotted for nested keys")
    return parser


def config_from_args(args):
    """The config file, then the flags given, then the key=value overrides. A flag the script
    does not use is dropped with one line on stderr."""
    data = load_yaml_with_base(args.config)
    script = getattr(args, "_script", None)
    used = FLAGS_BY_SCRIPT.get(script, tuple(FLAG_KEYS))
    given = [flag for flag in FLAG_KEYS if getattr(args, flag, None) is not None]
    for flag in given:
        if flag not in used:
            print(f"{script}.py: --{flag} is ignored (it means nothing to {script}.py)",
                  file=sys.stderr)
    flag_overrides = [f"{FLAG_KEYS[flag][0]}={getattr(args, flag)}" for flag in given if flag in used]
    data = apply_overrides(data, flag_overrides, source="command-line flag")
    data = apply_overrides(data, args.overrides, source="command line")
    return to_config(data)


def parse(script, description, argv=None, parser=None):
    """Parse ``argv`` and return ``(args, cfg)``; a config error exits with its message.
    ``parser``: a :func:`build_parser` parser the script added its own flags to."""
    parser = parser or build_parser(script, description)
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    return args, cfg


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ScriptError(RuntimeError):
    """A condition that stops an entry script with a message and a non-zero status."""


def check_writable(path, kind="folder"):
    """Refuse (ScriptError) an output ``path`` (a folder, or with ``kind="file"`` a file) that
    cannot be written, before any model work: it must not be a file where a folder is wanted (or
    the reverse), and the nearest existing folder at or above it must take a new file (tried with a
    temporary one, so permissions and read-only mounts count as they will)."""
    full = os.path.abspath(path)
    if kind == "folder" and os.path.isfile(full):
        raise ScriptError(f"cannot write to {path}: it is a file, not a folder")
    if kind == "file" and os.path.isdir(full):
        raise ScriptError(f"cannot write to {path}: it is a folder, not a file")
    if kind == "file" and os.path.exists(full) and not os.access(full, os.W_OK):
        raise ScriptError(f"cannot write to {path}: the file is read-only")
    existing = full if kind == "folder" else os.path.dirname(full)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ScriptError(f"cannot write to {path}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ScriptError(f"cannot write to {path}: no file can be created in {existing} "
                          f"({err.strerror})") from None


def check_output_dir(cfg):
    """:func:`check_writable` of ``cfg.output_dir``; on ModelArts the outputs go to the job's
    cache folder instead (:func:`mindseg.utils.modelarts.prepare_modelarts`)."""
    if not cfg.enable_modelarts:
        check_writable(cfg.output_dir)


@contextlib.contextmanager
def script_errors(script):
    """Turn the errors a user can cause (bad paths, configs, unknown models) into one line
    ``<script>: error: ...`` and exit status 1; ``MINDSEG_DEBUG=1`` keeps the traceback.
    Also silences the tracebacks each Cell's ``__del__`` prints at interpreter exit (MindSpore 2.10)."""
    from mindseg.engine.exporter import ExportError
    from mindseg.engine.hooks import TrainingStopped
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    except (ScriptError, ConfigError, ExportError, TrainingStopped, FileNotFoundError, ValueError,
            KeyError) as err:
        if os.environ.get("MINDSEG_DEBUG"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"{script}: error: {message}", file=sys.stderr, flush=True)
        sys.exit(1)


class _ProgressDataset:
    """A dataset whose dict iterator shows a tqdm bar (batches) on a terminal."""

    def __init__(self, dataset, enabled, desc):
        self.dataset = dataset
        self.enabled = enabled
        self.desc = desc

    def create_dict_iterator(self, *args, **kwargs):
        iterator = self.dataset.create_dict_iterator(*args, **kwargs)
        if not self.enabled:
            return iterator
        from tqdm import tqdm
        return tqdm(iterator, total=self.dataset.get_dataset_size(), desc=self.desc, unit="batch",
                    dynamic_ncols=True, file=sys.stderr)

    def get_dataset_size(self):
        return self.dataset.get_dataset_size()


def with_progress(dataset, enabled=True, desc="inference"):
    return _ProgressDataset(dataset, enabled, desc)


def list_images(input_path):
    """An image file, or the image files of a folder (sorted by name)."""
    if os.path.isfile(input_path):
        return [input_path]
    if not os.path.isdir(input_path):
        raise FileNotFoundError(f"--input {input_path}: no such file or folder")
    paths = sorted(os.path.join(input_path, name) for name in os.listdir(input_path)
                   if name.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise ScriptError(f"--input {input_path}: the folder holds no images "
                          f"({', '.join(IMAGE_EXTENSIONS)})")
    return paths


def output_stems(paths):
    """``{path: stem}`` of infer.py's outputs ``<stem>.png`` and ``<stem>.json``: the file name
    without its extension, or with it for images whose names differ only in extension (``x.jpg``
    and ``x.png`` give ``x.jpg.png`` and ``x.png.png``), so that no image's outputs replace
    another's. Names are compared ignoring case, as some file systems do; outputs that would still
    share a name are refused."""
    names = {path: os.path.basename(path) for path in paths}
    bare = collections.Counter(os.path.splitext(name)[0].lower() for name in names.values())
    stems = {path: name if bare[os.path.splitext(name)[0].lower()] > 1 else os.path.splitext(name)[0]
             for path, name in names.items()}
    shared = collections.Counter(stem.lower() for stem in stems.values())
    clash = sorted(path for path, stem in stems.items() if shared[stem.lower()] > 1)
    if clash:
        raise ScriptError(f"the outputs of {' and '.join(clash)} would have the same name "
                          f"({stems[clash[0]]}.png, .json): rename one of them")
    return stems
