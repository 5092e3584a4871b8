"""Weight import: state dicts made with NumPy under the sources' real key names and shapes are mapped
onto mindseg models built from configs (every parameter filled, values in the right place, class
layouts reordered), shape mismatches refused with the key named, unknown keys reported; .pkl and
(with torch installed) .pth files read.
"""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import mindspore as ms
import mindspore.nn as nn

from mindseg.config import load_config
from mindseg.models import build_model
from mindseg.utils.convert_weights import convert_checkpoint, convert_to_shapes
from mindseg.utils.weights.core import WeightConversionError, model_shapes, read_checkpoint
from mindseg.utils.weights.torchvision import COCO_CATEGORY_IDS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESNET50_BLOCKS = (3, 4, 6, 3)


def _bn(sd, prefix, channels, rng):
    sd[prefix + "weight"] = rng.random(channels, dtype=np.float32) + 0.5
    sd[prefix + "bias"] = rng.standard_normal(channels, dtype=np.float32)
    sd[prefix + "running_mean"] = rng.standard_normal(channels, dtype=np.float32)
    sd[prefix + "running_var"] = rng.random(channels, dtype=np.float32) + 0.5


def _conv(sd, key, shape, rng, bias=False):
    sd[key + ".weight"] = rng.standard_normal(shape, dtype=np.float32)
    if bias:
        sd[key + ".bias"] = rng.standard_normal(shape[0], dtype=np.float32)


def _resnet50(sd, rng, style):
    """torchvision (``backbone.body.``) or detectron2 (``backbone.bottom_up.``) ResNet-50 keys."""
    tv = style == "torchvision"
    stem = "backbone.body.conv1" if tv else "backbone.bottom_up.stem.conv1"
    _conv(sd, stem, (64, 3, 7, 7), rng)
    _bn(sd, "backbone.body.bn1." if tv else stem + ".norm.", 64, rng)
    in_ch = 64
    for stage, blocks in enumerate(RESNET50_BLOCKS):
        width = 64 * 2 ** stage
        for block in range(blocks):
            base = f"backbone.body.layer{stage + 1}.{block}." if tv else f"backbone.bottom_up.res{stage + 2}.{block}."
            shapes = [(width, in_ch, 1, 1), (width, width, 3, 3), (4 * width, width, 1, 1)]
            for i, shape in enumerate(shapes, 1):
                _conv(sd, f"{base}conv{i}", shape, rng)
                _bn(sd, f"{base}bn{i}." if tv else f"{base}conv{i}.norm.", shape[0], rng)
            if block == 0:
                _conv(sd, base + ("downsample.0" if tv else "shortcut"), (4 * width, in_ch, 1, 1), rng)
                _bn(sd, base + ("downsample.1." if tv else "shortcut.norm."), 4 * width, rng)
            in_ch = 4 * width
    return sd


def torchvision_state_dict(seed=0, num_source_classes=91, v2_names=True):
    """The keys and shapes of torchvision's maskrcnn_resnet50_fpn state dict (v2_names: the
    Conv2dNormActivation names of torchvision >= 0.13; else the names of the published v1 file)."""
    rng = np.random.default_rng(seed)
    sd = _resnet50({}, rng, "torchvision")
    dot0 = ".0" if v2_names else ""
    for i, channels in enumerate((256, 512, 1024, 2048)):
        _conv(sd, f"backbone.fpn.inner_blocks.{i}{dot0}", (256, channels, 1, 1), rng, bias=True)
        _conv(sd, f"backbone.fpn.layer_blocks.{i}{dot0}", (256, 256, 3, 3), rng, bias=True)
    _conv(sd, "rpn.head.conv.0.0" if v2_names else "rpn.head.conv", (256, 256, 3, 3), rng, bias=True)
    _conv(sd, "rpn.head.cls_logits", (3, 256, 1, 1), rng, bias=True)
    _conv(sd, "rpn.head.bbox_pred", (12, 256, 1, 1), rng, bias=True)
    _conv(sd, "roi_heads.box_head.fc6", (1024, 256 * 7 * 7), rng, bias=True)
    _conv(sd, "roi_heads.box_head.fc7", (1024, 1024), rng, bias=True)
    _conv(sd, "roi_heads.box_predictor.cls_score", (num_source_classes, 1024), rng, bias=True)
    _conv(sd, "roi_heads.box_predictor.bbox_pred", (4 * num_source_classes, 1024), rng, bias=True)
    for i in range(4):
        key = f"roi_heads.mask_head.{i}.0" if v2_names else f"roi_heads.mask_head.mask_fcn{i + 1}"
        _conv(sd, key, (256, 256, 3, 3), rng, bias=True)
    _conv(sd, "roi_heads.mask_predictor.conv5_mask", (256, 256, 2, 2), rng, bias=True)
    _conv(sd, "roi_heads.mask_predictor.mask_fcn_logits", (num_source_classes, 256, 1, 1), rng, bias=True)
    return sd


def detectron2_state_dict(seed=0, num_classes=80):
    """The keys and shapes of a detectron2 model zoo Mask R-CNN R50-FPN ``model`` dict."""
    rng = np.random.default_rng(seed)
    sd = _resnet50({}, rng, "detectron2")
    for level, channels in zip(range(2, 6), (256, 512, 1024, 2048)):
        _conv(sd, f"backbone.fpn_lateral{level}", (256, channels, 1, 1), rng, bias=True)
        _conv(sd, f"backbone.fpn_output{level}", (256, 256, 3, 3), rng, bias=True)
    _conv(sd, "proposal_generator.rpn_head.conv", (256, 256, 3, 3), rng, bias=True)
    _conv(sd, "proposal_generator.rpn_head.objectness_logits", (3, 256, 1, 1), rng, bias=True)
    _conv(sd, "proposal_generator.rpn_head.anchor_deltas", (12, 256, 1, 1), rng, bias=True)
    _conv(sd, "roi_heads.box_head.fc1", (1024, 256 * 7 * 7), rng, bias=True)
    _conv(sd, "roi_heads.box_head.fc2", (1024, 1024), rng, bias=True)
    _conv(sd, "roi_heads.box_predictor.cls_score", (num_classes + 1, 1024), rng, bias=True)
    _conv(sd, "roi_heads.box_predictor.bbox_pred", (4 * num_classes, 1024), rng, bias=True)
    for i in range(1, 5):
        _conv(sd, f"roi_heads.mask_head.mask_fcn{i}", (256, 256, 3, 3), rng, bias=True)
    _conv(sd, "roi_heads.mask_head.deconv", (256, 256, 2, 2), rng, bias=True)
    _conv(sd, "roi_heads.mask_head.predictor", (num_classes, 256, 1, 1), rng, bias=True)
    sd["pixel_mean"] = np.array([103.53, 116.28, 123.675], np.float32).reshape(3, 1, 1)
    return sd


@pytest.fixture(scope="module")
def tv_model():
    cfg = load_config(os.path.join(REPO, "config/maskrcnn/mask_rcnn_resnet50_fpn_torchvision.yml"))
    return build_model(cfg, num_classes=80)


@pytest.fixture(scope="module")
def d2_shapes():
    cfg = load_config(os.path.join(REPO, "config/maskrcnn/mask_rcnn_resnet50_fpn_detectron2.yml"))
    return model_shapes(build_model(cfg, num_classes=80))


@pytest.mark.parametrize("v2_names", [True, False])
def test_torchvision_fills_every_parameter(tv_model, v2_names):
    sd = torchvision_state_dict(v2_names=v2_names)
    params, report = convert_to_shapes("torchvision", sd, model_shapes(tv_model))
    assert report.missing == [] and report.unmapped == []
    assert len(report.mapped) == len(sd) == len(params)
    np.testing.assert_array_equal(params["backbone.body.net.layer3.5.bn2.moving_variance"],
                                  sd["backbone.body.layer3.5.bn2.running_var"])
    np.testing.assert_array_equal(params["backbone.body.net.layer2.0.down_sample.0.weight"],
                                  sd["backbone.body.layer2.0.downsample.0.weight"])
    inner = "backbone.fpn.inner_blocks.3" + (".0" if v2_names else "")
    np.testing.assert_array_equal(params["fpn.lateral_convs.3.weight"], sd[inner + ".weight"])
    np.testing.assert_array_equal(params["rpn.head.anchor_deltas.bias"], sd["rpn.head.bbox_pred.bias"])
    np.testing.assert_array_equal(params["roi_heads.mask_head.convs.6.weight"],
                                  sd["roi_heads.mask_head.3.0.weight" if v2_names else
                                     "roi_heads.mask_head.mask_fcn4.weight"])


def test_torchvision_class_layout(tv_model):
    """91 torchvision classes (background 0, COCO ids with gaps) -> 80 mindseg classes, background last."""
    sd = torchvision_state_dict()
    params, _ = convert_to_shapes("torchvision", sd, model_shapes(tv_model))
    cls_w, cls_b = sd["roi_heads.box_predictor.cls_score.weight"], sd["roi_heads.box_predictor.cls_score.bias"]
    assert COCO_CATEGORY_IDS[:12] == (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13) and COCO_CATEGORY_IDS[-1] == 90
    np.testing.assert_array_equal(params["roi_heads.box_head.cls_score.weight"][80], cls_w[0])  # background
    np.testing.assert_array_equal(params["roi_heads.box_head.cls_score.bias"][11], cls_b[13])   # 12th class: COCO id 13
    np.testing.assert_array_equal(params["roi_heads.box_head.cls_score.weight"][79], cls_w[90])
    deltas = sd["roi_heads.box_predictor.bbox_pred.weight"]
    np.testing.assert_array_equal(params["roi_heads.box_head.bbox_pred.weight"][4 * 11:4 * 12], deltas[4 * 13:4 * 14])
    np.testing.assert_array_equal(params["roi_heads.box_head.bbox_pred.weight"][:4], deltas[4:8])
    masks = sd["roi_heads.mask_predictor.mask_fcn_logits.bias"]
    np.testing.assert_array_equal(params["roi_heads.mask_head.predictor.bias"], masks[list(COCO_CATEGORY_IDS)])


def test_torchvision_identity_class_layout():
    """K + 1 source classes map 1..K onto 0..K-1 and background 0 onto K, here on a tiny layout."""
    from mindseg.utils.weights.torchvision import ClassLayout
    layout = ClassLayout()
    cls_b = np.arange(4, dtype=np.float32)                   # bg, a, b, c
    np.testing.assert_array_equal(layout("box_head", "cls_score.bias", cls_b, (4,)), [1, 2, 3, 0])
    deltas = np.arange(16, dtype=np.float32)                 # 4 per class, bg first
    np.testing.assert_array_equal(layout("box_head", "bbox_pred.bias", deltas, (12,)), np.arange(4, 16))
    with pytest.raises(WeightConversionError, match="--num_classes"):
        layout("box_head", "cls_score.bias", np.zeros(7, np.float32), (4,))


def test_detectron2_fills_every_parameter(d2_shapes):
    sd = detectron2_state_dict()
    params, report = convert_to_shapes("detectron2", sd, d2_shapes)
    assert report.missing == [] and report.unmapped == []
    assert report.skipped == ["pixel_mean"]
    assert len(params) == len(d2_shapes) == len(sd) - 1
    # background last in both: copied as is
    np.testing.assert_array_equal(params["roi_heads.box_head.cls_score.weight"], sd["roi_heads.box_predictor.cls_score.weight"])
    np.testing.assert_array_equal(params["backbone.body.net.bn1.gamma"], sd["backbone.bottom_up.stem.conv1.norm.weight"])
    np.testing.assert_array_equal(params["backbone.body.net.layer4.2.conv3.weight"],
                                  sd["backbone.bottom_up.res5.2.conv3.weight"])
    np.testing.assert_array_equal(params["backbone.body.net.layer1.0.down_sample.1.moving_mean"],
                                  sd["backbone.bottom_up.res2.0.shortcut.norm.running_mean"])
    np.testing.assert_array_equal(params["fpn.output_convs.0.bias"], sd["backbone.fpn_output2.bias"])
    np.testing.assert_array_equal(params["roi_heads.mask_head.convs.2.weight"], sd["roi_heads.mask_head.mask_fcn2.weight"])


def test_shape_mismatch_is_refused_with_the_key(d2_shapes):
    sd = detectron2_state_dict(num_classes=20)
    with pytest.raises(WeightConversionError) as err:
        convert_to_shapes("detectron2", sd, d2_shapes)
    message = str(err.value)
    assert "roi_heads.box_predictor.cls_score.weight (21, 1024) -> roi_heads.box_head.cls_score.weight (81, 1024)" in message
    assert "roi_heads.mask_head.predictor.bias" in message


def test_unknown_and_missing_keys_are_reported(d2_shapes):
    sd = detectron2_state_dict()
    sd["roi_heads.keypoint_head.conv_fcn1.weight"] = np.zeros((4, 4), np.float32)
    del sd["backbone.fpn_output5.weight"]
    _, report = convert_to_shapes("detectron2", sd, d2_shapes)
    assert report.unmapped == [("roi_heads.keypoint_head.conv_fcn1.weight", "no rule for this key")]
    assert report.missing == ["fpn.output_convs.3.weight"]
    assert any("missing mindseg parameter: fpn.output_convs.3.weight" in line for line in report.lines())


def test_deconv_layout_matches_torch_conv_transpose():
    """torch ConvTranspose2d weights are (in, out, kh, kw) and are copied as is: mindseg's deconv
    with them equals the transposed conv written out in NumPy."""
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((3, 5, 2, 2)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    deconv = nn.Conv2dTranspose(3, 5, 2, stride=2, has_bias=True)
    params, _ = convert_to_shapes("detectron2", {"roi_heads.mask_head.deconv.weight": weight,
                                                 "roi_heads.mask_head.deconv.bias": bias},
                                  {"mask_head.deconv.weight": (3, 5, 2, 2), "mask_head.deconv.bias": (5,)})
    deconv.weight.set_data(ms.Tensor(params["mask_head.deconv.weight"]))
    deconv.bias.set_data(ms.Tensor(params["mask_head.deconv.bias"]))
    expected = np.einsum("nchw,coab->nohawb", x, weight).reshape(1, 5, 8, 8) + bias.reshape(1, 5, 1, 1)
    np.testing.assert_allclose(deconv(ms.Tensor(x)).asnumpy(), expected, rtol=1e-5, atol=1e-5)


def test_pkl_file_converts_to_a_loadable_checkpoint(tmp_path, d2_shapes):
    """A detectron2 .pkl ({"model": ..., "__author__": ...}) -> .ckpt whose values are the source's."""
    sd = detectron2_state_dict()
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": sd, "__author__": "Detectron2 Model Zoo"}, f)
    assert sorted(read_checkpoint(str(path))) == sorted(sd)
    cfg = load_config(os.path.join(REPO, "config/maskrcnn/mask_rcnn_resnet50_fpn_detectron2.yml"))
    out = tmp_path / "out.ckpt"
    report = convert_checkpoint("detectron2", str(path), str(out), cfg, num_classes=80)
    assert report.complete
    loaded = ms.load_checkpoint(str(out))
    assert sorted(loaded) == sorted(d2_shapes)
    np.testing.assert_array_equal(loaded["rpn.head.objectness.weight"].asnumpy(),
                                  sd["proposal_generator.rpn_head.objectness_logits.weight"])


def test_bad_files_are_named(tmp_path):
    with pytest.raises(WeightConversionError, match="no such file"):
        read_checkpoint(str(tmp_path / "absent.pkl"))
    path = tmp_path / "junk.pkl"
    path.write_bytes(b"not a pickle")
    with pytest.raises(WeightConversionError, match="junk.pkl"):
        read_checkpoint(str(path))
    blobs = tmp_path / "c2.pkl"
    with open(blobs, "wb") as f:
        pickle.dump({"blobs": {"conv1_w": np.zeros(3)}}, f)
    with pytest.raises(WeightConversionError, match="Caffe2"):
        read_checkpoint(str(blobs))


def test_pth_without_torch_says_so(tmp_path):
    """With torch hidden, reading a .pth names the file and the optional dependency."""
    path = tmp_path / "model.pth"
    path.write_bytes(b"x")
    code = ("import sys; sys.modules['torch'] = None\n"
            "from mindseg.utils.weights.core import read_checkpoint, WeightConversionError\n"
            f"try:\n    read_checkpoint({str(path)!r})\nexcept WeightConversionError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert "needs PyTorch" in out.stdout and "model.pth" in out.stdout


def test_pth_file_reads_with_torch(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is an optional dependency; the .pth path needs it")
    sd = torchvision_state_dict(num_source_classes=3)
    path = tmp_path / "tv.pth"
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, str(path))
    read = read_checkpoint(str(path))
    assert sorted(read) == sorted(sd)
    np.testing.assert_array_equal(read["roi_heads.box_head.fc6.bias"], sd["roi_heads.box_head.fc6.bias"])


# --- centermask2 --------------------------------------------------------------------------------

MOBILENET_V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                        (6, 160, 3, 2), (6, 320, 1, 1))


def _vovnet_keys(sd, name, rng):
    """centermask2's VoVNet keys for one of mindseg's VOVNET_SPECS (the same table as centermask2's)."""
    from mindseg.models.backbones.vovnet import VOVNET_SPECS
    spec = VOVNET_SPECS[name]
    dw, stem = spec.depthwise, spec.stem_ch
    root = "backbone.bottom_up."

    def conv_norm(prefix, shape, depthwise=False):
        if depthwise:
            _conv(sd, prefix + "/dw_conv3x3", (shape[0], 1, 3, 3), rng)
            _conv(sd, prefix + "/pw_conv1x1", (shape[0], shape[0], 1, 1), rng)
            _bn(sd, prefix + "/pw_norm.", shape[0], rng)
        else:
            _conv(sd, prefix + "/conv", shape, rng)
            _bn(sd, prefix + "/norm.", shape[0], rng)

    conv_norm(root + "stem.stem_1", (stem[0], 3, 3, 3))
    conv_norm(root + "stem.stem_2", (stem[1], stem[0], 3, 3), dw)
    conv_norm(root + "stem.stem_3", (stem[2], stem[1], 3, 3), dw)
    in_ch = stem[2]
    for i in range(4):
        stage, stage_ch, out_ch = i + 2, spec.stage_conv_ch[i], spec.stage_out_ch[i]
        for block in range(1, spec.blocks_per_stage[i] + 1):
            osa = f"OSA{stage}_{block}"
            base = f"{root}stage{stage}.{osa}."
            width = in_ch
            if dw and in_ch != stage_ch:
                conv_norm(f"{base}conv_reduction.{osa}_reduction_0", (stage_ch, in_ch, 1, 1))
            for layer in range(spec.layers_per_block):
                conv_norm(f"{base}layers.{layer}.{osa}_{layer}", (stage_ch, stage_ch if dw else width, 3, 3), dw)
                width = stage_ch
            conv_norm(f"{base}concat.{osa}_concat", (out_ch, in_ch + spec.layers_per_block * stage_ch, 1, 1))
            _conv(sd, base + "ese.fc", (out_ch, out_ch, 1, 1), rng, bias=True)
            in_ch = out_ch
    return [spec.stage_out_ch[i] for i in (1, 2, 3)]


def _mobilenet_keys(sd, rng):
    root = "backbone.bottom_up.features."
    _conv(sd, root + "0.0", (32, 3, 3, 3), rng)
    _bn(sd, root + "0.1.", 32, rng)
    in_ch, index = 32, 1
    for expand, out_ch, repeats, _ in MOBILENET_V2_SETTING:
        for _ in range(repeats):
            hidden, base = in_ch * expand, f"{root}{index}.conv."
            layers = ([(hidden, 1, 3, 3), (out_ch, hidden, 1, 1)] if expand == 1 else
                      [(hidden, in_ch, 1, 1), (hidden, 1, 3, 3), (out_ch, hidden, 1, 1)])
            for j, shape in enumerate(layers):
                _conv(sd, f"{base}{3 * j}", shape, rng)
                _bn(sd, f"{base}{3 * j + 1}.", shape[0], rng)
            in_ch, index = out_ch, index + 1
    return [32, 96, 320]


def centermask2_state_dict(backbone, channels, num_convs, mask_convs, num_classes=80, seed=0):
    """centermask2 CenterMask / Lite keys: backbone, FPN on C3-C5 with P6/P7, FCOS, SAG-Mask, MaskIoU."""
    rng = np.random.default_rng(seed)
    sd = {}
    if backbone.startswith("vovnet"):
        in_channels = _vovnet_keys(sd, backbone, rng)
    elif backbone.startswith("mobilenet"):
        in_channels = _mobilenet_keys(sd, rng)
    else:
        _resnet50(sd, rng, "detectron2")
        in_channels = [512, 1024, 2048]
    for level, in_ch in zip((3, 4, 5), in_channels):
        _conv(sd, f"backbone.fpn_lateral{level}", (channels, in_ch, 1, 1), rng, bias=True)
        _conv(sd, f"backbone.fpn_output{level}", (channels, channels, 3, 3), rng, bias=True)
    for top in ("p6", "p7"):
        _conv(sd, f"backbone.top_block.{top}", (channels, channels, 3, 3), rng, bias=True)
    head = "proposal_generator.fcos_head."
    for tower in ("cls_tower", "bbox_tower"):
        for i in range(num_convs):
            _conv(sd, f"{head}{tower}.{3 * i}", (channels, channels, 3, 3), rng, bias=True)
            _bn(sd, f"{head}{tower}.{3 * i + 1}.", channels, rng)
            del sd[f"{head}{tower}.{3 * i + 1}.running_mean"], sd[f"{head}{tower}.{3 * i + 1}.running_var"]
    for name, out in (("cls_logits", num_classes), ("bbox_pred", 4), ("ctrness", 1)):
        _conv(sd, head + name, (out, channels, 3, 3), rng, bias=True)
    for level in range(5):
        sd[f"{head}scales.{level}.scale"] = np.array([1.0 + level], np.float32)
    for i in range(1, mask_convs + 1):
        _conv(sd, f"roi_heads.mask_head.mask_fcn{i}", (channels, channels, 3, 3), rng, bias=True)
        _conv(sd, f"roi_heads.maskiou_head.maskiou_fcn{i}", (channels, channels + (i == 1), 3, 3), rng, bias=True)
    _conv(sd, "roi_heads.mask_head.spatialAtt.conv", (1, 2, 3, 3), rng)
    _conv(sd, "roi_heads.mask_head.deconv", (channels, channels, 2, 2), rng, bias=True)
    _conv(sd, "roi_heads.mask_head.predictor", (num_classes, channels, 1, 1), rng, bias=True)
    _conv(sd, "roi_heads.maskiou_head.maskiou_fc1", (1024, channels * 7 * 7), rng, bias=True)
    _conv(sd, "roi_heads.maskiou_head.maskiou_fc2", (1024, 1024), rng, bias=True)
    _conv(sd, "roi_heads.maskiou_head.maskiou", (num_classes, 1024), rng, bias=True)
    return sd


class _CenterMaskParts(nn.Cell):
    """The parameterised parts of a CenterMask, built from mindseg's Cells, standing in for the
    meta-architecture where ``build_model`` cannot build it yet."""

    def __init__(self, backbone, channels, num_convs, mask_convs, num_classes=80):
        super().__init__()
        import mindcv
        from mindseg.models.backbones.resnet import ResNetBackbone
        from mindseg.models.backbones import vovnet  # noqa: F401 - registers the VoVNets
        from mindseg.models.dense_heads.fcos import FCOSHead
        from mindseg.models.layers.frozen_bn import FrozenBatchNorm2d
        from mindseg.models.necks.fpn import FPN
        from mindseg.models.roi_heads.maskiou_head import MaskIoUHead
        from mindseg.models.roi_heads.mask_head import MaskHead
        if backbone.startswith("resnet"):
            self.backbone = ResNetBackbone(backbone, out_levels=(3, 4, 5), stride_in_1x1=True, stem_pool="torch")
        else:
            self.backbone = nn.Cell()
            extra = {"norm": FrozenBatchNorm2d} if backbone.startswith("vovnet") else {}
            indices = [2, 3, 4] if backbone.startswith("vovnet") else [6, 13, 17]
            self.backbone.body = mindcv.create_model(backbone, features_only=True, out_indices=indices, **extra)
            self.backbone.out_channels = list(self.backbone.body.out_channels)
        self.fpn = FPN(in_channels=self.backbone.out_channels, in_strides=[8, 16, 32], out_channels=channels,
                       top_block="p6p7")
        self.fcos_head = FCOSHead(in_channels=channels, num_classes=num_classes, num_convs=num_convs)
        self.roi_heads = nn.Cell()
        self.roi_heads.mask_head = MaskHead(in_channels=channels, num_classes=num_classes, conv_dims=channels,
                                            num_convs=mask_convs, spatial_attention=True)
        self.roi_heads.maskiou_head = MaskIoUHead(in_channels=channels, num_classes=num_classes, conv_dims=channels,
                                                  num_convs=mask_convs)


@pytest.mark.parametrize("backbone,channels,num_convs,mask_convs", [
    ("vovnet39", 256, 4, 4), ("vovnet19_slim_dw", 128, 2, 2), ("mobilenet_v2_100", 128, 2, 2), ("resnet50", 256, 4, 4)])
def test_centermask2_fills_every_parameter(backbone, channels, num_convs, mask_convs):
    shapes = model_shapes(_CenterMaskParts(backbone, channels, num_convs, mask_convs))
    sd = centermask2_state_dict(backbone, channels, num_convs, mask_convs)
    params, report = convert_to_shapes("centermask2", sd, shapes)
    assert report.missing == [] and report.unmapped == []
    assert len(params) == len(shapes) == len(sd)
    head = "proposal_generator.fcos_head."
    np.testing.assert_array_equal(params["fcos_head.cls_tower.3.weight"], sd[head + "cls_tower.3.weight"])
    np.testing.assert_array_equal(params["fcos_head.bbox_tower.1.gamma"], sd[head + "bbox_tower.1.weight"])
    np.testing.assert_array_equal(params["fcos_head.scales.4.scale"], [5.0])
    np.testing.assert_array_equal(params["fpn.lateral_convs.0.weight"], sd["backbone.fpn_lateral3.weight"])
    np.testing.assert_array_equal(params["fpn.p7.bias"], sd["backbone.top_block.p7.bias"])
    np.testing.assert_array_equal(params["roi_heads.mask_head.spatial_attention.conv.weight"],
                                  sd["roi_heads.mask_head.spatialAtt.conv.weight"])
    np.testing.assert_array_equal(params["roi_heads.maskiou_head.predictor.weight"], sd["roi_heads.maskiou_head.maskiou.weight"])
    if backbone == "vovnet39":
        np.testing.assert_array_equal(params["backbone.body.net.stage4.blocks.1.layers.2.norm.moving_mean"],
                                      sd["backbone.bottom_up.stage4.OSA4_2.layers.2.OSA4_2_2/norm.running_mean"])
        np.testing.assert_array_equal(params["backbone.body.net.stage5.blocks.0.concat.conv.weight"],
                                      sd["backbone.bottom_up.stage5.OSA5_1.concat.OSA5_1_concat/conv.weight"])
    if backbone == "vovnet19_slim_dw":
        np.testing.assert_array_equal(params["backbone.body.net.stage3.blocks.0.reduction.conv.weight"],
                                      sd["backbone.bottom_up.stage3.OSA3_1.conv_reduction.OSA3_1_reduction_0/conv.weight"])
        np.testing.assert_array_equal(params["backbone.body.net.stem.stem_2.dw_conv.weight"],
                                      sd["backbone.bottom_up.stem.stem_2/dw_conv3x3.weight"])
    if backbone == "mobilenet_v2_100":
        np.testing.assert_array_equal(params["backbone.body.net.features_19.layers.6.weight"],
                                      sd["backbone.bottom_up.features.17.conv.6.weight"])
        np.testing.assert_array_equal(params["backbone.body.net.features_3.layers.4.gamma"],
                                      sd["backbone.bottom_up.features.1.conv.4.weight"])


def test_centermask2_onto_the_centermask_model():
    """The same mapping onto CenterMask as build_model makes it (V-39)."""
    overrides = ["model.name=centermask", "model.backbone.name=vovnet39", "model.fpn.top_block=p6p7",
                 "model.backbone.freeze_at=0"]
    cfg = load_config(os.path.join(REPO, "config/base.yml"), overrides)
    shapes = model_shapes(build_model(cfg, num_classes=80))
    params, report = convert_to_shapes("centermask2", centermask2_state_dict("vovnet39", 256, 4, 4), shapes)
    assert report.missing == [] and report.unmapped == []
    assert len(params) == len(shapes)


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears if the pickle runs."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_crafted_pkl_is_refused_and_its_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": np.zeros(3, np.float32)}, "x": _Payload(str(marker))}, f)
    with pytest.raises(WeightConversionError) as info:
        read_checkpoint(str(path))
    assert "model_final.pkl" in str(info.value) and "io.open" in str(info.value)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_crafted_pkl_refused_by_the_script_in_one_line(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": _Payload(str(marker))}, f)
    out = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_weights.py"),
                          "--source", "detectron2", "--input", str(path),
                          "--output", str(tmp_path / "out.ckpt")],
                         capture_output=True, text=True, cwd=str(tmp_path),
                         env=dict(os.environ, GLOG_v="3"))
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "evil.pkl" in out.stderr
    assert "io.open" in out.stderr and "Traceback" not in out.stderr
    assert not marker.exists() and not (tmp_path / "out.ckpt").exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_model_zoo_pickles_read_under_every_protocol(tmp_path, protocol):
    """Dicts / OrderedDicts of arrays, numpy scalars and plain values pass the restricted reader."""
    import collections
    weights = collections.OrderedDict(w=np.arange(6, dtype=np.float32).reshape(2, 3),
                                      i=np.arange(3, dtype=np.int64), s=np.float32(2.5))
    path = tmp_path / "zoo.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "zoo", "meta": [1, (2.0, "x"), b"y"]}, f,
                    protocol=protocol)
    read = read_checkpoint(str(path))
    np.testing.assert_array_equal(read["w"], weights["w"])
    np.testing.assert_array_equal(read["i"], weights["i"])
    assert float(read["s"]) == 2.5


def test_pth_is_read_with_weights_only_and_never_retried_without(tmp_path):
    """A stand-in torch whose weights_only load refuses: the file is refused, not reloaded."""
    path = tmp_path / "evil.pth"
    path.write_bytes(b"x")
    code = ("import sys, types, pickle\n"
            "calls = []\n"
            "def load(path, map_location=None, weights_only=None):\n"
            "    calls.append(weights_only)\n"
            "    raise pickle.UnpicklingError('Weights only load failed.\\n'\n"
            "                                 'Unsupported global: GLOBAL os.system was not an allowed global')\n"
            "sys.modules['torch'] = types.SimpleNamespace(load=load)\n"
            "from mindseg.utils.weights.core import read_checkpoint, WeightConversionError\n"
            f"try:\n    read_checkpoint({str(path)!r})\nexcept WeightConversionError as e:\n    print(e)\n"
            "print('calls', calls)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert "calls [True]" in out.stdout, out.stdout + out.stderr
    assert "evil.pth" in out.stdout and "GLOBAL os.system" in out.stdout


def test_crafted_pth_is_refused_with_torch(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is an optional dependency; the .pth path needs it")
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(3), "x": _Payload(str(marker))}, str(path))
    with pytest.raises(WeightConversionError, match="evil.pth"):
        read_checkpoint(str(path))
    assert not marker.exists()


# ---------------------------------------------------------------- source conventions in the configs

def _build(config, num_classes=3, canvas=(256, 256)):
    cfg = load_config(os.path.join(REPO, config), [f"data.canvas=[{canvas[0]}, {canvas[1]}]"])
    net = build_model(cfg, num_classes=num_classes)
    net.set_train(False)
    return net


def test_detectron2_config_pools_large_rois_as_detectron2_does():
    """detectron2's adaptive RoIAlign is uncapped: a 100 x 300 box sits on P3 and needs
    ceil(300 / 8 / 7) = 6 samples per bin along y, which the config's pooler_max_samples gives."""
    import np_reference as ref
    net = _build("config/maskrcnn/mask_rcnn_resnet50_fpn_detectron2.yml")
    rng = np.random.default_rng(0)
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    features = [rng.standard_normal((1, 3, int(320 * s), int(128 * s))).astype(np.float32) for s in scales]
    rois = np.array([[[10.0, 5.0, 110.0, 305.0], [20.0, 30.0, 60.0, 50.0]]], np.float32)
    levels = ref.fpn_level(rois) - 2
    assert levels.tolist() == [[1, 0]]
    got = net.roi_heads.box_pooler(tuple(ms.Tensor(f) for f in features), ms.Tensor(rois)).asnumpy()
    expected = ref.multilevel_roi_align(features, rois, levels, 7, scales, 0, True)
    np.testing.assert_allclose(got, expected, atol=2e-5)


@pytest.mark.parametrize("name", sorted(os.listdir(os.path.join(REPO, "config/centermask"))))
def test_centermask_configs_follow_centermask2(name):
    """Every CenterMask config runs NMS and the mask heads on unclipped FCOS boxes and samples
    mask RoIs as centermask2's uncapped adaptive RoIAlign does (up to 6 per bin and axis)."""
    cfg = load_config(os.path.join(REPO, "config/centermask", name))
    assert cfg.model.fcos.clip_before_nms is False
    assert cfg.model.roi_heads.pooler_max_samples == 6


def test_centermask_r50_config_builds_the_msra_resnet():
    """centermask2's R-50 strides in the first 1x1 conv and pads the stem pool 1 px on every side."""
    from mindseg.models.backbones import build_backbone
    cfg = load_config(os.path.join(REPO, "config/centermask/centermask_R_50_FPN_ms_3x.yml"))
    body = build_backbone(cfg.model.backbone, out_levels=(3, 4, 5)).body.net
    first = body.layer2[0]
    assert tuple(first.conv1.stride)[-2:] == (2, 2) and tuple(first.conv2.stride)[-2:] == (1, 1)
    out = body.max_pool(ms.Tensor(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))).asnumpy()
    np.testing.assert_array_equal(out[0, 0], [[5, 7], [13, 15]])  # padded on top / left too


def test_centermask_lite_config_clips_boxes_at_the_end():
    """With unclipped FCOS boxes, the model still returns boxes inside the image, empty ones
    invalid (centermask2 clips and drops them in its postprocessing)."""
    net = _build("config/centermask/centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yml", canvas=(128, 128))
    assert net.fcos.test_settings.clip is False
    head = net.fcos_head
    for layer, bias in ((head.cls_logits, 3.0), (head.bbox_pred, 1.0), (head.ctrness, 0.0)):
        # every location a confident class-0 box reaching one stride to each side
        layer.weight.set_data(ms.Tensor(np.zeros(layer.weight.shape, np.float32)))
        layer.bias.set_data(ms.Tensor(np.full(layer.bias.shape, bias, np.float32)))
    image = ms.Tensor(np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32))
    boxes, _, _, valid, _, _ = (o.asnumpy() for o in net(image, ms.Tensor([[64.0, 96.0]], ms.float32)))
    boxes = boxes[0][valid[0]]
    assert len(boxes) > 0
    assert boxes.min() >= 0 and boxes[:, [0, 2]].max() <= 96 and boxes[:, [1, 3]].max() <= 64
    assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
