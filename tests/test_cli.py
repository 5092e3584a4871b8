"""The entry scripts' command line: key=value overrides anywhere among the flags; an output that
cannot be written is refused in one line before any other work."""
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = str(ROOT / "config" / "base.yml")


def test_overrides_between_flags_are_applied():
    from mindseg.cli import parse
    _, cfg = parse("train", "test", ["train.base_lr=0.5", "--config", BASE, "seed=3",
                                     "--output_dir", "/tmp/o", "--overwrite", "data.batch_size=4"])
    assert (cfg.train.base_lr, cfg.seed, cfg.data.batch_size) == (0.5, 3, 4)
    assert cfg.output_dir == "/tmp/o" and cfg.train.overwrite is True


def test_the_drawing_threshold_is_the_configs_and_each_script_names_its_flag():
    """eval.draw_thresh: 0.5 in base.yml, 0.3 in the point model's shapes recipe; eval.py's
    --draw_thresh and infer.py's --score_thresh set it; each is ignored by the other script."""
    from mindseg.cli import parse
    point = str(ROOT / "config" / "shapes" / "centermask_point_shapes.yml")
    assert parse("eval", "test", ["--config", BASE])[1].eval.draw_thresh == 0.5
    assert parse("eval", "test", ["--config", point])[1].eval.draw_thresh == 0.3
    assert parse("eval", "test", ["--config", point, "--draw_thresh", "0.7"])[1].eval.draw_thresh == 0.7
    assert parse("infer", "test", ["--config", point, "--score_thresh", "0.2"])[1].eval.draw_thresh == 0.2
    assert parse("infer", "test", ["--config", point, "--draw_thresh", "0.7"])[1].eval.draw_thresh == 0.3


@pytest.mark.parametrize("script", ["train", "eval", "export", "infer"])
def test_every_script_reads_an_override_after_a_later_flag(script, script_main, capsys, tmp_path):
    """The override after --output_dir is read (and refused here for its value, naming it), not
    taken for an unrecognized argument."""
    argv = ["--config", BASE, "seed=1", "--ckpt_path", str(tmp_path / "x.ckpt"),
            "data.canvas=[1]"]
    argv += ["--input", str(tmp_path), "--output", str(tmp_path / "o")] if script == "infer" else \
        ["--output_dir", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as info:
        script_main(script)(argv)
    err = capsys.readouterr().err
    assert info.value.code != 0 and "unrecognized arguments" not in err, err
    assert "key 'data.canvas' must be a list of 2 items" in err and "data.canvas=[1]" in err, err


def _unwritable_outputs(tmp_path):
    """``{path: why}``: outputs no run can write. Root writes into a chmod'ed read-only folder, so
    the read-only case is /proc, which takes no new file from anyone."""
    regular = tmp_path / "a_file"
    regular.write_text("")
    return {str(regular / "out"): f"{regular} is a file, not a folder",
            "/proc/mindseg_no_such_folder/out": "no file can be created in /proc"}


@pytest.mark.parametrize("script", ["train", "eval", "export", "infer"])
def test_an_unwritable_output_is_refused_in_one_line_before_any_work(script, script_main, capsys,
                                                                      tmp_path):
    """Nothing else exists (dataset, checkpoint): the output is what the script refuses first."""
    missing = str(tmp_path / "missing")
    image = tmp_path / "image.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    outputs = _unwritable_outputs(tmp_path)
    if script != "export":  # a folder output that is a file
        outputs[str(tmp_path / "a_file")] = "it is a file, not a folder"
    for output, why in outputs.items():
        argv = ["--config", BASE, "--dataset_dir", missing]
        argv += [] if script == "train" else ["--ckpt_path", missing + ".ckpt"]
        argv += {"infer": ["--input", str(image), "--output", output],
                 "export": ["--output", output]}.get(script, ["--output_dir", output])
        with pytest.raises(SystemExit) as info:
            script_main(script)(argv)
        err = capsys.readouterr().err.strip()
        assert info.value.code == 1 and "\n" not in err, err
        assert err.startswith(f"{script}.py: error: cannot write to {output}") and why in err, err
