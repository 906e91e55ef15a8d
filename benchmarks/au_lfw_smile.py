"""In-the-wild check at real resolution: AU12 (model vs blendshape teacher) against LFW smile labels
(Morishita smile/neutral labels), on LFW images NOT among the faces pseudo-labelled for training
(train-au takes the first --lfw-train of the manifest shuffled with seed 0; those are excluded here).

    python benchmarks/au_lfw_smile.py [--n 1000] [--lfw-train 4000]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
from pathlib import Path

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.environ.get("SMILE2PAY_MODELS", "../shared/models"))
    ap.add_argument("--data", default=os.environ.get("SMILE2PAY_DATA", "../shared/data"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--lfw-train", type=int, default=4000)
    a = ap.parse_args(argv)
    from sklearn.metrics import roc_auc_score

    from smile2pay.config import Settings
    from smile2pay.errors import FaceError
    from smile2pay.pipeline import FacePipeline
    from smile2pay_tools.train.cache import make_teacher
    from smile2pay.vision.au import blendshapes_to_aus

    rows = list(csv.DictReader(open(Path(a.data) / "lfw" / "manifest.csv", encoding="utf-8")))
    random.Random(0).shuffle(rows)                      # same order as train-au's pseudo-label draw
    held = [r for r in rows[a.lfw_train:] if r["smile_morishita"] in ("0", "1")][:a.n]
    pipe = FacePipeline(Settings.from_env(models=a.models))
    teacher = make_teacher(a.models)
    y, pm, pt, p6, t6 = [], [], [], [], []
    for r in held:
        try:
            f = pipe.single(Path(a.data) / r["path"], pick="center", embed=False)
        except FaceError:
            continue
        t = blendshapes_to_aus(teacher.blendshapes(f.image, f.bbox, f.landmarks))
        y.append(int(r["smile_morishita"]))
        pm.append(f.au_probs["AU12"])
        p6.append(min(f.au_probs["AU6"], f.au_probs["AU12"]))
        pt.append(t["AU12"])
        t6.append(min(t["AU6"], t["AU12"]))
    y = np.array(y)
    out = {"images": len(y), "smile": int(y.sum()), "neutral": int((1 - y).sum()),
           "auc_model_AU12": round(float(roc_auc_score(y, pm)), 4),
           "auc_teacher_AU12": round(float(roc_auc_score(y, pt)), 4),
           "auc_model_min_AU6_AU12": round(float(roc_auc_score(y, p6)), 4),
           "auc_teacher_min_AU6_AU12": round(float(roc_auc_score(y, t6)), 4),
           "model_AU12_acc_at_0.5": round(float(((np.array(pm) >= 0.5) == y).mean()), 4)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
