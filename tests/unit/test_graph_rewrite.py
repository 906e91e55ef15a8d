"""smile2pay.models.graph: the PRelu rewrite computes the same function (small synthetic graphs, checked
against onnxruntime running the original graph); tests/integration/test_models.py checks it on the real
identity and PAD weights."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from smile2pay.models.graph import optimized_bytes, prelu_to_relu_affine


def _conv_prelu_model(slope: np.ndarray, *, slope_as_input: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    c = 4
    w = rng.standard_normal((c, 3, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    if slope_as_input:
        inputs.append(helper.make_tensor_value_info("a", TensorProto.FLOAT, list(slope.shape)))
    else:
        inits.append(numpy_helper.from_array(slope.astype(np.float32), "a"))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["c", "a"], ["p"]),
             helper.make_node("PRelu", ["p", "a"], ["y"])]   # the same slope initializer used twice
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                          initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _conv_only(m: onnx.ModelProto) -> bytes:
    g = helper.make_graph([m.graph.node[0]], "c", [m.graph.input[0]],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 4, 8, 8])],
                          initializer=[t for t in m.graph.initializer if t.name == "w"])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def _run(model_bytes: bytes, feeds: dict) -> np.ndarray:
    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.parametrize("slope", [
    np.array([0.25, -0.83, 0.94, 0.0], np.float32).reshape(4, 1, 1),   # per channel, negative slope included
    np.array([0.1], np.float32),                                        # one slope for all
    np.full((4, 1, 1), 1.0, np.float32),                                # identity
])
def test_rewritten_graph_computes_the_same_function(slope):
    m = _conv_prelu_model(slope)
    raw = m.SerializeToString()
    new, report = optimized_bytes(raw)
    assert report.prelu == 2 and report.prelu_skipped == 0
    ops = [n.op_type for n in onnx.load_from_string(new).graph.node]
    assert "PRelu" not in ops and ops.count("Relu") == 2
    onnx.checker.check_model(onnx.load_from_string(new))
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32) * 3
    ref, got = _run(raw, {"x": x}), _run(new, {"x": x})
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    c = _run(_conv_only(m), {"x": x})           # the same, by hand from the convolution's output
    a = slope
    hand = np.where(c > 0, c, a * c)
    hand = np.where(hand > 0, hand, a * hand)
    np.testing.assert_allclose(got, hand, rtol=1e-5, atol=1e-5)
    assert (ref < 0).any() and (ref > 0).any()


def test_prelu_by_hand():
    """The identity the rewrite rests on, a*x + (1-a)*relu(x) == prelu(x), for negative, zero and positive x
    and slopes outside [0, 1]."""
    x = np.array([-3.0, -0.5, 0.0, 0.5, 3.0])
    for a in (-0.83, 0.0, 0.25, 1.0, 1.7):
        assert np.allclose(a * x + (1 - a) * np.maximum(x, 0), np.where(x > 0, x, a * x))


def test_dynamic_slope_is_left_alone():
    slope = np.array([0.25, -0.5, 0.5, 0.1], np.float32).reshape(4, 1, 1)
    m = _conv_prelu_model(slope, slope_as_input=True)
    _, report = prelu_to_relu_affine(m)
    assert report.prelu == 0 and report.prelu_skipped == 2
    assert [n.op_type for n in m.graph.node].count("PRelu") == 2


def test_model_without_prelu_is_returned_unchanged():
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    raw = helper.make_model(g).SerializeToString()
    out, report = optimized_bytes(raw)
    assert out is raw and report.prelu == 0


def _expand_dw_project(c: int, *, shared_slope: bool = False, bias: bool = True) -> onnx.ModelProto:
    """x (8 ch) -> 1x1 Conv (c) -> PRelu -> 3x3 depthwise Conv (group c, stride 2) -> PRelu -> 1x1 Conv (8):
    the MiniFASNet block the channel padding applies to."""
    rng = np.random.default_rng(c)
    t = lambda *s: rng.standard_normal(s).astype(np.float32)   # noqa: E731
    inits = [numpy_helper.from_array(t(c, 8, 1, 1), "wa"), numpy_helper.from_array(t(c, 1, 3, 3), "wb"),
             numpy_helper.from_array(t(8, c, 1, 1), "wd"), numpy_helper.from_array(t(c, 1, 1) * 0.3, "s1"),
             numpy_helper.from_array(t(c, 1, 1) * 0.3, "s2"), numpy_helper.from_array(t(c), "ba"),
             numpy_helper.from_array(t(c), "bb"), numpy_helper.from_array(t(8), "bd")]
    a_in = ["x", "wa", "ba"] if bias else ["x", "wa"]
    nodes = [helper.make_node("Conv", a_in, ["a"]),
             helper.make_node("PRelu", ["a", "s1"], ["p1"]),
             helper.make_node("Conv", ["p1", "wb", "bb"], ["b"], group=c, pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("PRelu", ["b", "s1" if shared_slope else "s2"], ["p2"]),
             helper.make_node("Conv", ["p2", "wd", "bd"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 10, 10])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 5, 5])], initializer=inits,
                          value_info=[helper.make_tensor_value_info("p1", TensorProto.FLOAT, [1, c, 10, 10])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("c,bias", [(13, True), (103, True), (13, False)])
def test_padded_depthwise_block_computes_the_same_function(c, bias):
    from smile2pay.models.graph import pad_depthwise_channels

    raw = _expand_dw_project(c, bias=bias).SerializeToString()
    new, report = optimized_bytes(raw)
    assert report.padded == 1 and report.prelu == 2
    m = onnx.load_from_string(new)
    onnx.checker.check_model(m)
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    padded = -(-c // 16) * 16
    assert init["wa"].shape == (padded, 8, 1, 1) and init["wb"].shape == (padded, 1, 3, 3)
    assert init["wd"].shape == (8, padded, 1, 1) and not init["wd"][:, c:].any()
    dw = next(n for n in m.graph.node if n.op_type == "Conv" and n.input[1] == "wb")
    assert helper.get_attribute_value(dw.attribute[0]) == padded
    x = np.random.default_rng(2).standard_normal((1, 8, 10, 10)).astype(np.float32) * 2
    ref, got = _run(raw, {"x": x}), _run(new, {"x": x})
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # a width already a multiple of 16 is left alone
    _, n = pad_depthwise_channels(_expand_dw_project(16))
    assert n == 0


def test_a_block_sharing_a_weight_is_left_alone():
    from smile2pay.models.graph import pad_depthwise_channels

    _, n = pad_depthwise_channels(_expand_dw_project(13, shared_slope=True))
    assert n == 0


def test_a_block_whose_slope_is_not_per_channel_is_left_alone():
    """A PRelu slope of one value for all channels (broadcast) cannot be padded per channel: not touched."""
    from smile2pay.models.graph import pad_depthwise_channels

    m = _expand_dw_project(13)
    for t in m.graph.initializer:
        if t.name == "s1":
            t.CopyFrom(numpy_helper.from_array(np.array([0.25], np.float32), "s1"))
    _, n = pad_depthwise_channels(m)
    assert n == 0
