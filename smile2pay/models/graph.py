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
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RewriteReport:
    prelu: int = 0          # PRelu nodes rewritten
    prelu_skipped: int = 0  # PRelu nodes left alone (slope not a constant initializer)

    def to_dict(self) -> dict:
        return {"prelu": self.prelu, "prelu_skipped": self.prelu_skipped}


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


def optimized_bytes(model_bytes: bytes) -> tuple[bytes, RewriteReport]:
    """The model's bytes with the rewrites above applied; the input bytes unchanged when nothing applies."""
    import onnx

    if b"PRelu" not in model_bytes:
        return model_bytes, RewriteReport()
    m = onnx.load_from_string(model_bytes)
    m, report = prelu_to_relu_affine(m)
    if not report.prelu:
        return model_bytes, report
    return m.SerializeToString(), report
