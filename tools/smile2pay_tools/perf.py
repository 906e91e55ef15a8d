"""Per-stage latency of the pipeline (median / p95 over many runs), shared by benchmarks and the CLI.

Timings are compared as ratios within one run (machines are noisy); nothing here asserts a time.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from smile2pay.imageio import ImageInput


def time_call(fn: Callable[[], object], runs: int = 50, warmup: int = 5) -> dict:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000.0)
    a = np.asarray(samples)
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)),
            "mean_ms": float(a.mean()), "min_ms": float(a.min()), "runs": int(runs)}


def stage_latency(pipeline, frame: ImageInput, runs: int = 50, warmup: int = 5) -> dict:
    """Time each stage of ``pipeline`` on one frame, plus the bare model forwards.

    Returns ``{"stages": {...}, "overhead": ...}`` where ``overhead`` is the end-to-end
    analyze time (decoded frame in) over the sum of the models' own forward times, minus 1.
    """
    from smile2pay.vision.align import norm_crop

    raw = frame if isinstance(frame, (bytes, bytearray)) else None
    if raw is None and not isinstance(frame, np.ndarray):
        with open(frame, "rb") as fh:
            raw = fh.read()
    img = pipeline.load(raw if raw is not None else frame)
    dets = pipeline.detect(img)
    if len(dets) == 0:
        raise ValueError("no face in the benchmark frame")
    faces = pipeline.faces(img, dets)
    det_size = int(dets.attempt.split(":")[-1])
    st: dict[str, dict] = {}
    if raw is not None:
        st["decode"] = time_call(lambda: pipeline.load(raw), runs, warmup)
    st["detect"] = time_call(lambda: pipeline.detect(img), runs, warmup)
    st["align_quality"] = time_call(lambda: pipeline.faces(img, dets), runs, warmup)
    st["align_only"] = time_call(lambda: norm_crop(img, dets.landmarks[0], 112, 0.0), runs, warmup)
    st["embed"] = time_call(lambda: pipeline.embed(faces), runs, warmup)
    au_an = getattr(pipeline, "au_analyzer", None)
    if au_an is not None:
        st["au"] = time_call(lambda: pipeline.au(faces), runs, warmup)
    st["analyze_total"] = time_call(lambda: pipeline.analyze(img), runs, warmup)

    # bare forwards: the same tensors the stages build, straight into session.run
    det = pipeline.detector
    fwd: dict[str, dict] = {}
    if det.session is not None:
        sess = det.session
        blob = det.forward_blob(img, det_size)
        name = sess.get_inputs()[0].name
        fwd["detect_forward"] = time_call(lambda: sess.run(None, {name: blob}), runs, warmup)
    emb = pipeline.embedder
    eblob = emb.preprocess([f.identity_crop for f in faces])
    fwd["embed_forward"] = time_call(lambda: emb.session.run([emb.output_name], {emb.input_name: eblob}),
                                     runs, warmup)
    if au_an is not None and au_an.model is not None:
        m = au_an.model
        ablob = m.preprocess([norm_crop(img, f.landmarks, au_an.crop_size, au_an.pad) for f in faces])
        name = m.session.get_inputs()[0].name
        fwd["au_forward"] = time_call(lambda: m.session.run(None, {name: ablob}), runs, warmup)
    st.update(fwd)
    model_ms = sum(v["median_ms"] for v in fwd.values())
    return {
        "frame": {"width": int(img.shape[1]), "height": int(img.shape[0]), "faces": len(faces),
                  "det_size": det_size},
        "stages": st,
        "models_forward_ms": model_ms,
        "overhead": st["analyze_total"]["median_ms"] / model_ms - 1.0 if model_ms else None,
    }
