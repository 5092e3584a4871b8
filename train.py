"""Train a model on a COCO-format dataset.

python train.py --config CFG [--device_target Ascend|GPU|CPU] [--mix True|False]
                [--resume_ckpt PATH | --pre_trained PATH] [--dataset_dir DIR] [--output_dir DIR]
                [--overwrite] [--strict] [key=value ...]

Any COCO-format annotation file and image folder: data.train_ann, data.train_images,
data.val_ann, data.val_images (relative to --dataset_dir; empty: the COCO 2017 layout there).
--pre_trained starts a new run from a checkpoint's weights (train.py's or convert_weights.py's),
keeping the rows of the classes both name; train.eval_interval=N evaluates the val split every N
steps into OUTPUT_DIR/metrics.jsonl and keeps the best as OUTPUT_DIR/checkpoints/best.ckpt.

Launch several processes with scripts/run_msrun_train.sh, scripts/run_distribute_train.sh or a
plain `mpirun -n N python train.py ...` for data-parallel training, on one server or several.
Checkpoints go to OUTPUT_DIR/checkpoints, the resolved config and the log to OUTPUT_DIR;
checkpoints of an earlier run there stop the run unless --resume_ckpt continues it or --overwrite
moves them aside. Each checkpoint carries the model and class names, so export.py and infer.py
need no dataset.
"""
import mindseg  # noqa: F401  (before mindspore: fast oneDNN CPU kernels)
from mindseg.cli import parse, script_errors
from mindseg.engine.inference import build_network, resolve_num_classes


def main(argv=None):
    args, cfg = parse("train", __doc__.splitlines()[0], argv)
    with script_errors("train.py"):
        from mindseg.dataset.pipeline import create_dataset, dataset_info
        from mindseg.engine.trainer import train
        from mindseg.runtime import init_runtime
        from mindseg.utils.modelarts import finish_modelarts, prepare_modelarts

        runtime = init_runtime(cfg)
        cfg = prepare_modelarts(cfg, runtime)
        info = dataset_info(cfg, "train", report=print if runtime.is_main else None)
        net = build_network(cfg, resolve_num_classes(cfg, info))
        dataset = create_dataset(cfg, "train", runtime.rank, runtime.world)
        summary = train(cfg, net, dataset, runtime, class_info=info)
        finish_modelarts(cfg, runtime)
        if runtime.is_main:
            print(f"checkpoint: {summary['last_checkpoint']}")
    return summary


if __name__ == "__main__":
    main()
