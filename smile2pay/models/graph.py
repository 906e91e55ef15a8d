"""Graph rewrites applied to a model in memory before onnxruntime loads it.

The files on disk are never changed (their sha256 is checked first); only the graph handed to onnxruntime is.
Each rewrite computes the same function with the same weights, up to float rounding.

``prelu_to_relu_affine``: ``PRelu(x, a)`` becomes ``a*x + (1-a)*Relu(x)`` (for ``x > 0``: ``a*x + (1-a)*x =
x``; otherwise ``a*x``; true for any slope, negative slopes included). Why: onnxruntime's CPU layout optimiser
(NCHWc) has no PRelu kernel, so every PRelu of a MobileFaceNet pulls the activations out of the blocked layout
and back (``ReorderOutput`` / ``ReorderInput``) and runs a slow broadcast; ``Relu``, ``Mul`` and ``Add`` stay in
the blocked layout and fuse into the next convolution. Measured on ``w600k_mbf.onnx`` (one thread, one pinned
core of this machine's AMD EPYC): 17.7 -> 11.3 ms a forward pass, largest output difference 2e-6
(``python benchmarks/graph_rewrite.py``, ``benchmarks/results/graph_rewrite.json``).

``pad_depthwise_channels``: the pruned widths of MiniFASNet (103, 231, 13, ... channels inside an expand ->
depthwise -> project block) are padded with zero channels to a multiple of 16, so that the block runs in the
same blocked layout instead of onnxruntime's plain depthwise path; the padded channels carry zeros and the
project convolution gives them zero weight. Measured on the two PAD models (one thread, one pinned core,
2026-12-07): ~2.5 -> ~1.65 ms a forward pass each, largest output difference 1e-6. It runs first, then the
PRelu rewrite.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RewriteReport:
    prelu: int = 0          # PRelu nodes rewritten
    prelu_skipped: int = 0  # PRelu nodes left alone (slope not a constant initializer)
    padded: int = 0         # expand -> depthwise -> project blocks whose inner channels were padded

    def to_dict(self) -> dict:
        # "padded" only when it happened: benchmark caches key on this dict (smile2pay_tools.bench.common), and
        # a model it does not touch (the identity model) keeps the key it had before the padding existed
        d = {"prelu": self.prelu, "prelu_skipped": self.prelu_skipped}
        return {**d, "padded": self.padded} if self.padded else d


def _fresh(names: set[str], base: str) -> str:
    name, k = base, 0
    while name in names:
        k += 1
        name = f"{base}_{k}"
    names.add(name)
    return name


def prelu_to_relu_affine(model):
    """Rewrite every ``PRelu`` whose slope is an initializer; returns ``(model, RewriteReport)``.

    ``model`` is an ``onnx.ModelProto`` and is changed in place (pass a copy to keep the original).
    """
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    init = {t.name: t for t in g.initializer}
    names = set(init)
    for n in g.node:
        names.update(n.input)
        names.update(n.output)
    for v in list(g.input) + list(g.output):
        names.add(v.name)
    new_nodes, done, skipped = [], 0, 0
    for node in g.node:
        if node.op_type != "PRelu" or node.domain not in ("", "ai.onnx") or len(node.input) != 2 \
                or node.input[1] not in init:
            if node.op_type == "PRelu":
                skipped += 1
            new_nodes.append(node)
            continue
        x, s = node.input
        y = node.output[0]
        slope = numpy_helper.to_array(init[s])
        dtype = slope.dtype if slope.dtype.kind == "f" else np.float32
        a = slope.astype(dtype)
        base = (node.name or y).replace("/", "_")
        a_name = _fresh(names, f"{base}_prelu_a")
        b_name = _fresh(names, f"{base}_prelu_1ma")
        g.initializer.extend([numpy_helper.from_array(a, a_name),
                              numpy_helper.from_array((1 - a).astype(dtype), b_name)])
        r, ax, br = (_fresh(names, f"{base}_prelu_{t}") for t in ("relu", "ax", "br"))
        new_nodes += [helper.make_node("Relu", [x], [r], name=r),
                      helper.make_node("Mul", [x, a_name], [ax], name=ax),
                      helper.make_node("Mul", [r, b_name], [br], name=br),
                      helper.make_node("Add", [ax, br], [y], name=_fresh(names, f"{base}_prelu_add"))]
        done += 1
    if done:
        del g.node[:]
        g.node.extend(new_nodes)
        used = {i for n in g.node for i in n.input} | {v.name for v in g.output}
        keep = [t for t in g.initializer if t.name in used]
        del g.initializer[:]
        g.initializer.extend(keep)
    return model, RewriteReport(prelu=done, prelu_skipped=skipped)


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def pad_depthwise_channels(model, block: int = 16):
    """Pad the inner channels of every ``Conv -> PRelu -> depthwise Conv -> PRelu -> Conv`` block whose channel
    count is not a multiple of ``block`` with zero channels; returns ``(model, blocks padded)``.

    Why: onnxruntime's blocked CPU layout (NCHWc, 16 channels a block with AVX-512, 8 with AVX2) takes a
    convolution only when its channel counts are multiples of the block, so the pruned widths of MiniFASNet
    (103, 231, 13, ...) run their depthwise convolutions on the slow plain path with layout reorders around
    them. The added channels have zero weights, bias and slope: the expand conv writes 0 there, PRelu and the
    depthwise conv keep 0, and the project conv's zero weights for them add nothing, so the output is the
    same function (up to float summation order). ``model`` is changed in place."""
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    init = {t.name: t for t in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    uses = {k: len(v) for k, v in consumers.items()}
    graph_out = {v.name for v in g.output}

    def only(t, op):
        c = consumers.get(t, [])
        return c[0] if len(c) == 1 and c[0].op_type == op and t not in graph_out else None

    def weights(node, k):
        name = node.input[k] if len(node.input) > k else ""
        return (name, numpy_helper.to_array(init[name])) if name in init and uses.get(name) == 1 else (None, None)

    replaced, padded, touched = {}, 0, set()
    for a in list(g.node):
        if a.op_type != "Conv" or (_attr(a, "group", 1) != 1):
            continue
        p1 = only(a.output[0], "PRelu")
        b = only(p1.output[0], "Conv") if p1 is not None else None
        p2 = only(b.output[0], "PRelu") if b is not None else None
        d = only(p2.output[0], "Conv") if p2 is not None else None
        if d is None or _attr(d, "group", 1) != 1 or p1.input[0] != a.output[0] or b.input[0] != p1.output[0] \
                or p2.input[0] != b.output[0] or d.input[0] != p2.output[0]:
            continue
        aw_n, aw = weights(a, 1)
        bw_n, bw = weights(b, 1)
        dw_n, dw = weights(d, 1)
        s1_n, s1 = weights(p1, 1)
        s2_n, s2 = weights(p2, 1)
        if any(v is None for v in (aw, bw, dw, s1, s2)):
            continue
        c = aw.shape[0]
        if c % block == 0 or bw.shape[:2] != (c, 1) or _attr(b, "group", 1) != c or dw.shape[1] != c \
                or s1.shape[:1] != (c,) or s2.shape[:1] != (c,) or s1.size != c or s2.size != c:
            continue
        if any(len(n.input) > 2 and (n.input[2] not in init or uses.get(n.input[2]) != 1) for n in (a, b)):
            continue        # a bias that is computed or shared cannot be padded here
        extra = -c % block

        def grow(arr, axis):
            pad = [(0, 0)] * arr.ndim
            pad[axis] = (0, extra)
            return np.pad(arr, pad).astype(arr.dtype)

        replaced[aw_n] = grow(aw, 0)
        replaced[bw_n] = grow(bw, 0)
        replaced[dw_n] = grow(dw, 1)
        replaced[s1_n] = grow(s1, 0)      # slopes shaped (c, 1, 1) or (c,): one per channel
        replaced[s2_n] = grow(s2, 0)
        for node in (a, b):
            if len(node.input) > 2:
                replaced[node.input[2]] = grow(numpy_helper.to_array(init[node.input[2]]), 0)
        for att in b.attribute:
            if att.name == "group":
                att.CopyFrom(helper.make_attribute("group", c + extra))
        touched.update({a.output[0], p1.output[0], b.output[0], p2.output[0]})
        padded += 1
    if padded:
        for t in g.initializer:
            if t.name in replaced:
                t.CopyFrom(numpy_helper.from_array(replaced[t.name], t.name))
        keep = [v for v in g.value_info if v.name not in touched]     # their declared shapes changed
        del g.value_info[:]
        g.value_info.extend(keep)
    return model, padded


def optimized_bytes(model_bytes: bytes) -> tuple[bytes, RewriteReport]:
    """The model's bytes with the rewrites above applied; the input bytes unchanged when nothing applies."""
    import onnx

    if b"PRelu" not in model_bytes:
        return model_bytes, RewriteReport()
    m = onnx.load_from_string(model_bytes)
    m, padded = pad_depthwise_channels(m)
    m, report = prelu_to_relu_affine(m)
    report = RewriteReport(report.prelu, report.prelu_skipped, padded)
    if not report.prelu and not padded:
        return model_bytes, report
    return m.SerializeToString(), report


def add_outputs(model_bytes: bytes, names: tuple[str, ...] | list[str]) -> bytes:
    """The same model with inner tensors ``names`` also returned as graph outputs (after the existing ones),
    e.g. the recogniser's feature maps the smile probe reads (:mod:`smile2pay.vision.smile_probe`). Raises
    ``ValueError`` for a name no node produces. The function of the existing outputs is unchanged."""
    import onnx

    m = onnx.load_from_string(model_bytes)
    have = {o for n in m.graph.node for o in n.output}
    present = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            raise ValueError(f"no tensor {name!r} in this graph")
        if name not in present:
            m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return m.SerializeToString()
