"""Anchor layout against a loop-by-loop reference and hand-computed tables."""
import numpy as np
import pytest

import np_reference as ref
from mindseg.models.anchors import AnchorGenerator, generate_anchors


def test_hand_table_detectron2():
    # stride 4, size 32, ratios (0.5, 1, 2): w = sqrt(1024 / r), h = r * w
    (level,) = generate_anchors([(1, 2)], [4], [32], [0.5, 1.0, 2.0])
    w_half, h_half = np.sqrt(1024 / 0.5) / 2, 0.5 * np.sqrt(1024 / 0.5) / 2
    expected = np.array([
        [-w_half, -h_half, w_half, h_half], [-16, -16, 16, 16], [-h_half, -w_half, h_half, w_half],
        [4 - w_half, -h_half, 4 + w_half, h_half], [4 - 16, -16, 4 + 16, 16], [4 - h_half, -w_half, 4 + h_half, w_half],
    ])
    np.testing.assert_allclose(level, expected, atol=1e-4)
    assert level.dtype == np.float32


def test_matches_loop_reference_with_offset_and_several_sizes():
    shapes, strides = [(3, 5), (2, 3)], [8, 16]
    sizes = [[32, 40], [64, 80]]
    ratios = [0.5, 1.0, 2.0]
    levels = generate_anchors(shapes, strides, sizes, ratios, offset=0.5)
    for lvl, (shape, stride, size) in enumerate(zip(shapes, strides, sizes)):
        np.testing.assert_allclose(levels[lvl], ref.anchors_detectron2(shape, stride, size, ratios, 0.5), atol=1e-4)
    assert levels[0].shape == (3 * 5 * 6, 4)


def test_round_like_torchvision():
    (level,) = generate_anchors([(1, 1)], [4], [32], [0.5, 1.0, 2.0], round_anchors=True)
    # torchvision: w = 32 / sqrt(r), h = 32 * sqrt(r), corners round(+-w/2): 22.627 -> 23, 11.314 -> 11
    np.testing.assert_array_equal(level, [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]])


def test_mask_rcnn_canvas_count():
    shapes = [(200, 336), (100, 168), (50, 84), (25, 42), (13, 21)]
    levels = generate_anchors(shapes, [4, 8, 16, 32, 64], [32, 64, 128, 256, 512], [0.5, 1.0, 2.0])
    assert [len(a) for a in levels] == [h * w * 3 for h, w in shapes]
    # the anchor of P6's last cell, ratio 1: centre (20 * 64, 12 * 64), size 512
    np.testing.assert_allclose(levels[4][-2], [1280 - 256, 768 - 256, 1280 + 256, 768 + 256])


def test_bad_input_names_the_file():
    with pytest.raises(ValueError, match="anchors.py: sizes has 2 entries for 3"):
        generate_anchors([(2, 2)] * 3, [4, 8, 16], [32, 64], [1.0])


def test_anchor_generator_one_size_per_level():
    """``AnchorGenerator`` (what the RPN takes): one size per level, the ratios at every cell."""
    generator = AnchorGenerator((32, 64), (0.5, 1.0, 2.0), offset=0.5, round_anchors=True)
    assert generator.num_cell_anchors == 3
    shapes = [(4, 6), (2, 3)]
    got = generator.per_level(shapes, (8, 16))
    want = generate_anchors(shapes, [8, 16], [[32], [64]], [0.5, 1.0, 2.0], offset=0.5, round_anchors=True)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    with pytest.raises(ValueError, match="model.anchor.sizes: 2 sizes for 3 levels"):
        generator.per_level(shapes + [(1, 2)], (8, 16, 32))
