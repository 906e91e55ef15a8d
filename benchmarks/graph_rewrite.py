"""What the PRelu rewrite (smile2pay.models.graph) does to each model that has PRelu: time and outputs.

    python benchmarks/graph_rewrite.py [--runs 60] [--core 1] [--out benchmarks/results/graph_rewrite.json]

Per model (the identity model and the two MiniFASNet PAD models): onnxruntime's own profile of the graph as on
disk and as rewritten (kernel time per operator type), the forward time of both (one intra-op thread, spinning
off, the process pinned to one core, alternating), and the largest output difference on random inputs and, for
the identity model, the cosine between the two embeddings of real aligned LFW faces.
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def _profile(model, feed, runs: int) -> dict:
    import onnxruntime as ort

    from smile2pay.models.runtime import session_options

    so = session_options(1)
    so.enable_profiling = True
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        s.run(None, feed)
    path = s.end_profiling()
    events = json.loads(Path(path).read_text())
    os.remove(path)
    per = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per[e["args"]["op_name"]] += e["dur"]
    return {k: round(v / runs / 1000.0, 3) for k, v in per.most_common()}


def main(argv=None) -> dict:
    import onnxruntime as ort

    from smile2pay.models.graph import optimized_bytes
    from smile2pay.models.runtime import session_options
    from smile2pay_tools.bench.common import write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--core", type=int, default=None, help="pin to this core (default: the last)")
    ap.add_argument("--faces", type=int, default=60, help="aligned LFW faces for the identity cosine")
    ap.add_argument("--out", default="benchmarks/results/graph_rewrite.json")
    a = ap.parse_args(argv)
    core = a.core if a.core is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    models = Path(os.environ.get("SMILE2PAY_MODELS", "../shared/models"))
    data = Path(os.environ.get("SMILE2PAY_DATA", "../shared/data"))
    files = {"w600k_mbf": models / "w600k_mbf.onnx",
             "pad_minifasnet_v2": models / "antispoof" / "minifasnet_v2_80x80_s2.7.onnx",
             "pad_minifasnet_v1se": models / "antispoof" / "minifasnet_v1se_80x80_s4.0.onnx"}
    rng = np.random.default_rng(0)
    res: dict = {"benchmark": "graph_rewrite", "date": time.strftime("%Y-%m-%d"), "core": core, "threads": 1,
                 "command": "python benchmarks/graph_rewrite.py "
                            + " ".join(argv if argv is not None else sys.argv[1:]),
                 "load_average": os.getloadavg()[0], "models": {}}
    for name, path in files.items():
        raw = path.read_bytes()
        new, rep = optimized_bytes(raw)
        s_raw = ort.InferenceSession(raw, session_options(1), providers=["CPUExecutionProvider"])
        s_new = ort.InferenceSession(new, session_options(1), providers=["CPUExecutionProvider"])
        inp = s_raw.get_inputs()[0]
        shape = [1 if not isinstance(d, int) else d for d in inp.shape]
        xs = [rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(5)]
        diff = max(float(np.abs(s_raw.run(None, {inp.name: x})[0] - s_new.run(None, {inp.name: x})[0]).max())
                   for x in xs)
        t_raw, t_new = [], []
        for r in range(a.runs + 5):
            x = xs[r % len(xs)]
            t = time.perf_counter(); s_raw.run(None, {inp.name: x}); d1 = time.perf_counter() - t
            t = time.perf_counter(); s_new.run(None, {inp.name: x}); d2 = time.perf_counter() - t
            if r >= 5:
                t_raw.append(d1 * 1e3)
                t_new.append(d2 * 1e3)
        ent = {"file": str(path.relative_to(models)), "rewrites": rep.to_dict(), "max_abs_output_diff": diff,
               "as_on_disk_ms": {"median": round(float(np.median(t_raw)), 3),
                                 "p95": round(float(np.percentile(t_raw, 95)), 3)},
               "rewritten_ms": {"median": round(float(np.median(t_new)), 3),
                                "p95": round(float(np.percentile(t_new, 95)), 3)},
               "ratio_median": round(float(np.median(t_new) / np.median(t_raw)), 3),
               "profile_ms_per_op_as_on_disk": _profile(raw, {inp.name: xs[0]}, a.runs),
               "profile_ms_per_op_rewritten": _profile(new, {inp.name: xs[0]}, a.runs)}
        if name == "w600k_mbf":
            from smile2pay.config import Settings
            from smile2pay.pipeline import FacePipeline

            pipe = FacePipeline(Settings.from_env(models=str(models), threads=1))
            paths = sorted(glob.glob(str(data / "lfw" / "**" / "*.jpg"), recursive=True))[::97][:a.faces]
            cos = []
            for p in paths:
                try:
                    crop = pipe.single(p, pick="center", embed=False, au=False).identity_crop
                except Exception:  # noqa: BLE001 - no face: not a probe
                    continue
                blob = pipe.embedder.preprocess([crop])
                e1, e2 = s_raw.run(None, {inp.name: blob})[0][0], s_new.run(None, {inp.name: blob})[0][0]
                cos.append(float(e1 @ e2 / np.linalg.norm(e1) / np.linalg.norm(e2)))
            ent["lfw_faces"] = len(cos)
            ent["cosine_as_on_disk_vs_rewritten"] = {"min": round(min(cos), 7),
                                                     "median": round(float(np.median(cos)), 7)}
        res["models"][name] = ent
        print(f"{name:22s} {rep.prelu} PRelu rewritten, {rep.padded} blocks padded: {ent['as_on_disk_ms']['median']:.2f} -> "
              f"{ent['rewritten_ms']['median']:.2f} ms (x{ent['ratio_median']:.2f}), max output diff {diff:.2e}"
              + (f", LFW cosine min {ent['cosine_as_on_disk_vs_rewritten']['min']}" if "lfw_faces" in ent else ""))
    write_json(a.out, res)
    print(f"wrote {a.out}")
    return res


if __name__ == "__main__":
    main()
