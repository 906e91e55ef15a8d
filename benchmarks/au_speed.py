"""AU inference speed per face on 1 thread: the AU model (crop -> probs + embedding, preprocessing
included) and, for comparison, the blendshape teacher (ROI warp + FaceMesh + blendshapes).

    python benchmarks/au_speed.py [--model PATH] [--runs 200] [--pin]

Real faces: LFW images (detected once with the pipeline, not timed). Prints JSON with median/p95 ms.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="AU ONNX file (default: the package's au_mobile)")
    ap.add_argument("--models", default=os.environ.get("SMILE2PAY_MODELS", "../shared/models"))
    ap.add_argument("--data", default=os.environ.get("SMILE2PAY_DATA", "../shared/data"))
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--pin", action="store_true", help="pin the process to one CPU core")
    ap.add_argument("--out", help="also write the JSON here")
    a = ap.parse_args(argv)
    if a.pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from smile2pay.config import PACKAGE_WEIGHTS, Settings
    from smile2pay.models.manifest import get_spec
    from smile2pay.models.runtime import create_session
    from smile2pay.pipeline import FacePipeline
    from smile2pay_tools.train.cache import make_teacher
    from smile2pay.vision.au import AUModel, au_crop

    pipe = FacePipeline(Settings.from_env(models=a.models, threads=1))
    lfw = sorted((Path(a.data) / "lfw" / "lfw-deepfunneled").glob("*/*.jpg"))[:20]
    faces = []
    for p in lfw:
        img = pipe.load(p)
        d = pipe.detect(img)
        if len(d):
            faces.append((img, d.boxes[0], d.landmarks[0]))
    spec = get_spec("au_mobile")
    path = a.model or str(PACKAGE_WEIGHTS / spec.file)
    model = AUModel(spec, create_session(path, threads=1, name="au")[0])
    teacher = make_teacher(a.models, threads=1)
    from smile2pay.vision.fer import FERClassifier

    fer = FERClassifier(create_session(Path(a.models) / "fer_emotion_minixception.onnx", threads=1, name="fer")[0])

    def bench(fn):
        for i in range(10):
            fn(i)
        ts = []
        for i in range(a.runs):
            t0 = time.perf_counter()
            fn(i)
            ts.append((time.perf_counter() - t0) * 1000)
        return {"median_ms": round(float(np.median(ts)), 3), "p95_ms": round(float(np.percentile(ts, 95)), 3),
                "runs": a.runs}

    from smile2pay.vision.au import centre_crop, fuse_happy

    def _fused(face):
        c = au_crop(face[0], face[2])
        probs, _ = model.run([c])
        return fuse_happy(dict(zip(model.au_names, map(float, probs[0]))), float(fer.happy([centre_crop(c, 0.15)])[0]))

    crops = [au_crop(img, lm) for img, _, lm in faces]
    out = {
        "au_model (crop given)": bench(lambda i: model.run([crops[i % len(crops)]])),
        "au_model (incl. norm_crop)": bench(lambda i: model.run([au_crop(faces[i % len(faces)][0],
                                                                         faces[i % len(faces)][2])])),
        "blendshape_teacher": bench(lambda i: teacher.blendshapes(*faces[i % len(faces)])),
        "fer_classifier (crop given)": bench(lambda i: fer.run([crops[i % len(crops)]])),
        # the shipped AU stage: AU model + FER P(happy) on the crop's unpadded centre, fused (incl. norm_crop)
        "au_stage_fused (incl. norm_crop)": bench(lambda i: _fused(faces[i % len(faces)])),
        "threads": 1, "pinned": bool(a.pin), "faces": len(faces), "model": path,
        "input_size": model.size,
    }
    out["date"] = time.strftime("%Y-%m-%d")
    print(json.dumps(out, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    sys.exit(main())
