"""Command-line flags shared by train.py, eval.py, export.py and infer.py.

Each flag is a shortcut for a config key (``--mix True`` is ``train.mix=True``); anything else is
given as trailing ``key=value`` overrides. Flags keep the names users of MindSpore model zoos type.
"""
import argparse

from mindseg.config import ConfigError, apply_overrides, load_yaml_with_base, to_config

# flag -> (config key, help)
FLAG_KEYS = {
    "device_target": ("device_target", "Ascend | GPU | CPU"),
    "mode": ("mode", "graph | pynative"),
    "output_dir": ("output_dir", "where logs, checkpoints and results go"),
    "dataset_dir": ("data.dataset_dir", "COCO 2017 layout root"),
    "mix": ("train.mix", "mixed precision with dynamic loss scaling (True | False)"),
    "resume_ckpt": ("train.resume_ckpt", "resume weights, optimizer, step and lr from a checkpoint"),
    "overwrite": ("train.overwrite", "move the checkpoints of an earlier run in OUTPUT_DIR aside "
                  "instead of refusing to start"),
    "strict": ("data.strict", "refuse bad data (named) instead of skipping it"),
    "ckpt_path": ("eval.ckpt_path", "checkpoint to evaluate, export or run"),
    "file_format": ("export.file_format", "MINDIR | AIR"),
    "enable_modelarts": ("enable_modelarts", "copy data from --data_url and outputs to --train_url"),
    "data_url": ("data_url", "OBS path of the dataset (ModelArts)"),
    "train_url": ("train_url", "OBS path for the outputs (ModelArts)"),
}
# switches take no value: ``--overwrite`` is ``train.overwrite=True``
SWITCHES = ("overwrite", "strict")

FLAGS_BY_SCRIPT = {
    "train": ("device_target", "mode", "output_dir", "dataset_dir", "mix", "resume_ckpt",
              "overwrite", "strict", "enable_modelarts", "data_url", "train_url"),
    "eval": ("device_target", "mode", "output_dir", "dataset_dir", "ckpt_path", "strict",
             "enable_modelarts", "data_url", "train_url"),
    "export": ("device_target", "output_dir", "dataset_dir", "ckpt_path", "file_format"),
    "infer": ("device_target", "mode", "dataset_dir", "ckpt_path"),
}


def build_parser(script, description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="a YAML file under config/")
    for flag in FLAGS_BY_SCRIPT[script]:
        key, help_text = FLAG_KEYS[flag]
        switch = {"action": "store_const", "const": "True"} if flag in SWITCHES else {}
        parser.add_argument(f"--{flag}", default=None, help=f"{help_text} (config key {key})",
                            **switch)
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, dotted for nested keys")
    return parser


def config_from_args(args):
    """The config file, then the flags given, then the key=value overrides."""
    data = load_yaml_with_base(args.config)
    flag_overrides = [f"{FLAG_KEYS[flag][0]}={getattr(args, flag)}"
                      for flag in FLAG_KEYS if getattr(args, flag, None) is not None]
    data = apply_overrides(data, flag_overrides, source="command-line flag")
    data = apply_overrides(data, args.overrides, source="command line")
    return to_config(data)


def parse(script, description, argv=None):
    """Parse ``argv`` and return ``(args, cfg)``; a config error exits with its message."""
    parser = build_parser(script, description)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    return args, cfg
