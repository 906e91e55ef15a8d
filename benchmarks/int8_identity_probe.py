"""Would a static int8 (QDQ) w600k_mbf make the identity embedding cheaper? (issue 17, measured, not adopted)

Usage: python benchmarks/int8_identity_probe.py [--calib 100] [--probe 100] [--out benchmarks/results/int8_identity_probe.json]

Converts w600k_mbf.onnx (opset 11) to opset 13, quantises it with onnxruntime's static QDQ quantiser (per-channel
int8 weights, uint8 activations) calibrated on aligned LFW faces, then times both models on other aligned LFW
faces (one thread, spinning off, alternating) and compares their embeddings (cosine per face). The quantised
model is written to a temporary folder, never shipped: it is derived from InsightFace weights (non-commercial).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> dict:
    import onnx
    import onnxruntime as ort
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from smile2pay.config import Settings
    from smile2pay.pipeline import FacePipeline
    from smile2pay_tools.bench.common import write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib", type=int, default=100)
    ap.add_argument("--probe", type=int, default=100)
    ap.add_argument("--rewrite", action="store_true",
                    help="quantise (and compare with) the graph smile2pay loads: PRelu as Relu/Mul/Add "
                         "(smile2pay.models.graph)")
    ap.add_argument("--out", default="benchmarks/results/int8_identity_probe.json")
    a = ap.parse_args(argv)
    models = Path(os.environ.get("SMILE2PAY_MODELS", "../shared/models"))
    data = Path(os.environ.get("SMILE2PAY_DATA", "../shared/data"))
    src = models / "w600k_mbf.onnx"
    pipe = FacePipeline(Settings.from_env(models=str(models)))
    paths = sorted(glob.glob(str(data / "lfw" / "**" / "*.jpg"), recursive=True))
    sel = np.random.default_rng(0).choice(len(paths), a.calib + a.probe + 40, replace=False)
    crops = []
    for i in sel:
        try:
            crops.append(pipe.single(pipe.load(paths[i]), pick="center", embed=False).identity_crop)
        except Exception:
            continue
    blob = lambda c: ((c[:, :, ::-1].astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]  # noqa: E731
    name = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    cal = crops[:a.calib]
    probe = crops[a.calib:a.calib + a.probe]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: blob(c)} for c in cal])

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        m13, pre, q = (Path(tmp) / n for n in ("m13.onnx", "pre.onnx", "int8.onnx"))
        model = onnx.load(str(src))
        if a.rewrite:
            from smile2pay.models.graph import prelu_to_relu_affine

            model, _ = prelu_to_relu_affine(model)
            fp_src = Path(tmp) / "rewritten.onnx"
            onnx.save(model, str(fp_src))
        else:
            fp_src = src
        onnx.save(version_converter.convert_version(model, 13), str(m13))
        quant_pre_process(str(m13), str(pre))
        quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        fp = ort.InferenceSession(str(fp_src), so, providers=["CPUExecutionProvider"])
        i8 = ort.InferenceSession(str(q), so, providers=["CPUExecutionProvider"])
        tf, ti, cos = [], [], []
        for c in probe[:10]:
            fp.run(None, {name: blob(c)}), i8.run(None, {name: blob(c)})
        for c in probe:
            x = blob(c)
            t = time.perf_counter(); ef = fp.run(None, {name: x})[0][0]; tf.append(time.perf_counter() - t)
            t = time.perf_counter(); ei = i8.run(None, {name: x})[0][0]; ti.append(time.perf_counter() - t)
            cos.append(float(ef @ ei / np.linalg.norm(ef) / np.linalg.norm(ei)))
    st = lambda v: {"median_ms": round(float(np.median(v)) * 1e3, 2), "p95_ms": round(float(np.percentile(v, 95)) * 1e3, 2)}  # noqa: E731
    res = {"date": time.strftime("%Y-%m-%d"),
           "command": "python benchmarks/int8_identity_probe.py" + (" --rewrite" if a.rewrite else ""),
           "graph": "PRelu rewritten (smile2pay.models.graph)" if a.rewrite else "as on disk",
           "data": f"LFW aligned faces: {len(cal)} calibration, {len(probe)} probes (other images)",
           "load_average": os.getloadavg()[0], "fp32": st(tf), "int8_qdq": st(ti),
           "ratio_int8_to_fp32": round(float(np.median(ti) / np.median(tf)), 3),
           "cosine_fp32_int8": {"median": round(float(np.median(cos)), 4), "min": round(float(np.min(cos)), 4)}}
    print(json.dumps(res, indent=1))
    write_json(a.out, res)
    return res


if __name__ == "__main__":
    main()
