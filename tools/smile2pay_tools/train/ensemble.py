"""Several trained AU networks -> one ONNX file that runs them all on one input (a seed ensemble).

Outputs keep the single-model contract of :class:`smile2pay.vision.au.AUModel`:

* ``au_probs`` (N, K): the mean of the members' probabilities;
* ``au_embedding`` (N, M*D): the members' L2-normalised embeddings concatenated and scaled by
  1/sqrt(M), so it is unit-norm and its cosine similarity is the mean of the members' cosines
  (the members' embedding spaces are not aligned, so they are never averaged element-wise).

The members must share input name, input size, AU names and opset (models of one recipe with
different seeds). The metadata of the first member is kept, plus ``ensemble`` (member count and
each member's sha256).
"""
from __future__ import annotations

import json
import math
from pathlib import Path


def combine_au_onnx(paths: list[str | Path], out: str | Path, note: str = "") -> Path:
    import onnx
    from onnx import TensorProto, helper

    from smile2pay.models.store import sha256_file

    if len(paths) < 2:
        raise ValueError("an ensemble needs at least two member models")
    models = [onnx.load(str(p)) for p in paths]
    first = models[0]
    meta0 = {p.key: p.value for p in first.metadata_props}
    for p, m in zip(paths[1:], models[1:]):
        meta = {q.key: q.value for q in m.metadata_props}
        if meta.get("au_names") != meta0.get("au_names") or meta.get("input_size") != meta0.get("input_size"):
            raise ValueError(f"{p}: AU names or input size differ from {paths[0]}")
        if [i.name for i in m.graph.input] != [i.name for i in first.graph.input]:
            raise ValueError(f"{p}: input names differ from {paths[0]}")
    inp = first.graph.input[0]
    nodes, inits, probs, embs = [], [], [], []
    for k, m in enumerate(models):
        pre = f"m{k}_"
        g = onnx.compose.add_prefix(m, prefix=pre).graph
        rename = {pre + inp.name: inp.name}
        for n in g.node:
            n.input[:] = [rename.get(x, x) for x in n.input]
            nodes.append(n)
        inits.extend(g.initializer)
        probs.append(pre + "au_probs")
        embs.append(pre + "au_embedding")
    M = len(models)
    nodes += [
        helper.make_node("Mean", probs, ["au_probs"], name="ensemble_mean_probs"),
        helper.make_node("Concat", embs, ["emb_cat"], axis=1, name="ensemble_concat_emb"),
        helper.make_node("Mul", ["emb_cat", "ensemble_scale"], ["au_embedding"], name="ensemble_scale_emb"),
    ]
    inits.append(helper.make_tensor("ensemble_scale", TensorProto.FLOAT, [], [1.0 / math.sqrt(M)]))
    k_aus = len(json.loads(meta0["au_names"]))
    emb_dim = sum(int(m.graph.output[1].type.tensor_type.shape.dim[1].dim_value or 0) for m in models)
    outputs = [helper.make_tensor_value_info("au_probs", TensorProto.FLOAT, ["batch", k_aus]),
               helper.make_tensor_value_info("au_embedding", TensorProto.FLOAT, ["batch", emb_dim or None])]
    graph = helper.make_graph(nodes, "au_ensemble", [inp], outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=list(first.opset_import), producer_name="smile2pay_tools.train.ensemble")
    model.ir_version = first.ir_version
    meta = dict(meta0)
    meta["ensemble"] = json.dumps({"members": M, "note": note, "member_sha256": [sha256_file(p) for p in paths]})
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(out), save_as_external_data=False)
    return out
