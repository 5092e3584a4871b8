"""Export a checkpoint as a graph that runs without mindseg, with a JSON describing it.

python export.py --config CFG --ckpt_path PATH --file_format MINDIR [--output PATH] [key=value ...]

The graph takes (image (B, 3, H, W), image_size (B, 2)) and returns fixed-size boxes, scores,
classes, valid flags and 28x28 mask probabilities; PATH.json holds the input / output names,
shapes and dtypes, the preprocessing and the class names (from the checkpoint; the dataset is
read only for checkpoints that do not carry them). AIR needs --device_target Ascend.
With --mix True the graph's convolution and dense layers compute in float16 (for Ascend), the
box arithmetic stays float32; its top detections match the float32 graph's within 0.5 px and
0.005 in score (tests/test_workflow.py; measured 0.01 px and 1e-4 on the shapes quick start).
"""
import os

import mindseg  # noqa: F401  (before mindspore: fast oneDNN CPU kernels)
from mindseg.cli import build_parser, check_writable, config_from_args, script_errors


def main(argv=None):
    parser = build_parser("export", __doc__.splitlines()[0])
    parser.add_argument("--output", default=None,
                        help="graph path, extension optional (default OUTPUT_DIR/<model name>)")
    args = parser.parse_intermixed_args(argv)
    with script_errors("export.py"):
        from mindseg.engine.exporter import check_file_format, export_model, export_paths
        from mindseg.engine.loading import load_trained_model
        from mindseg.runtime import set_device_and_mode

        cfg = config_from_args(args)
        file_format = check_file_format(cfg.export.file_format, cfg.device_target)
        output = args.output or os.path.join(cfg.output_dir, cfg.model.name)
        for path in export_paths(output, file_format):
            check_writable(path, kind="file")
        set_device_and_mode(cfg.device_target, "pynative")
        model = load_trained_model(cfg, cfg.eval.ckpt_path)
        graph, spec = export_model(model.net, cfg, model.info, output, file_format, cfg.export.batch_size)
        print(f"exported {model.checkpoint} -> {graph}\ndescription -> {spec}")
    return graph, spec


if __name__ == "__main__":
    main()
