"""benchmark.py --breakdown: the stage lists follow the models' constructs (their staged outputs
equal the whole network's), and a list that drifts from the model is caught."""
import sys
from pathlib import Path

import mindspore as ms
import pytest

from tests.test_mask_rcnn import TINY, tiny_batch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "dev"))
import benchmark_stages as bs  # noqa: E402

from mindseg.config import load_config  # noqa: E402
from mindseg.engine.trainer import TRAIN_INPUTS  # noqa: E402
from mindseg.models import build_model  # noqa: E402

LITE_TINY = ["model.num_classes=5", "data.canvas=[128,128]", "data.max_instances=4"]


def staged(config, overrides, training):
    ms.set_seed(0)
    net = build_model(load_config(config, overrides))
    net.set_train(training)
    batch = tiny_batch()
    state = dict(zip(TRAIN_INPUTS, batch))
    state["gt_valid_nc"] = ms.ops.logical_and(state["gt_valid"], ms.ops.logical_not(state["gt_crowd"]))
    stages, outputs = bs.STAGES[net_name(config)](net, training)
    final, times = bs.run_stages(stages, state, jit=False)
    return net, batch, stages, outputs, final, times


def net_name(config):
    return "centermask" if "centermask" in config else "mask_rcnn"


@pytest.mark.parametrize("config,overrides", [("config/shapes/mask_rcnn_shapes.yml", TINY),
                                              ("config/shapes/centermask_lite_shapes.yml", LITE_TINY)])
def test_inference_stages_give_the_whole_networks_outputs(config, overrides):
    net, batch, stages, outputs, final, times = staged(config, overrides, training=False)
    assert list(times) == [st.name for st in stages] and all(t > 0 for t in times.values())
    assert final["num_results"] == int(final["valid"].asnumpy().sum())
    assert bs.check_against(final, outputs, net(*batch[:2])) == 0.0


@pytest.mark.parametrize("config,overrides", [("config/shapes/mask_rcnn_shapes.yml", TINY),
                                              ("config/shapes/centermask_lite_shapes.yml", LITE_TINY)])
def test_training_stages_give_the_whole_networks_losses(config, overrides):
    net, batch, _, outputs, final, _ = staged(config, overrides, training=True)
    assert outputs == tuple(net.loss_names)
    bs.replay_last_key(net)  # the whole pass draws the staged pass's samples
    assert bs.check_against(final, outputs, net(*batch), atol=1e-6) <= 1e-6


def test_a_stage_list_that_drifts_from_the_model_is_caught():
    net, batch, stages, outputs, final, _ = staged("config/shapes/mask_rcnn_shapes.yml", TINY, training=False)
    final = dict(final, boxes=final["boxes"] + 0.5 * final["valid"].astype(ms.float32)[..., None])
    with pytest.raises(AssertionError, match="no longer follows the model"):
        bs.check_against(final, outputs, net(*batch[:2]))
