"""Would a cue on the scene below the face (clothing) tell two photos from one capture? (issue 15; probed, not adopted)

    python benchmarks/scene_cue_probe.py [--victims 200] [--out benchmarks/results/scene_cue_probe.json]

The capture-continuity signature reads the aligned face crop only, and the two-photo attacks that still pay are
pairs whose faces are lit and posed alike, some of them in plainly different clothes and places. This probes a
clothing cue on the LFW victims of ``benchmarks/two_photo_attack.py``: the region below the detected face box (a
quarter face width wider on each side, from 0.15 to 0.9 face heights under the chin) as Lab means over a 2x2 grid,
lightness relative to its own mean (exposure-free). Attack pairs: the victim's second neutral photo vs the happy
photo. Same capture, synthetic (../shared has no same-session camera frames that show a torso): the neutral photo
vs a copy shifted up to 8 px, scaled up to 4 %, brightness x0.9-1.1, sensor noise sigma 3, JPEG q90. Reports both
distance distributions and the attack share flagged at the p99 and the max of the same-capture distances.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def torso(img: np.ndarray, box) -> np.ndarray | None:
    import cv2

    h, w = img.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    bw, bh = x2 - x1, y2 - y1
    xa, ya = int(max(0, x1 - 0.25 * bw)), int(min(h - 1, y2 + 0.15 * bh))
    xb, yb = int(min(w, x2 + 0.25 * bw)), int(min(h, y2 + 0.9 * bh))
    if yb - ya < 8 or xb - xa < 8:
        return None
    lab = cv2.cvtColor(img[ya:yb, xa:xb], cv2.COLOR_BGR2LAB).astype(np.float32)
    g = cv2.resize(lab, (2, 2), interpolation=cv2.INTER_AREA).reshape(-1, 3)
    g[:, 0] -= g[:, 0].mean()
    return g.ravel()


def perturb(img: np.ndarray, rng) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = 1 + rng.uniform(-0.04, 0.04)
    tx, ty = rng.uniform(-8, 8, 2)
    m = np.array([[s, 0, tx + (1 - s) * w / 2], [0, s, ty + (1 - s) * h / 2]], np.float32)
    o = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT).astype(np.float32) * rng.uniform(0.9, 1.1)
    o = np.clip(o + rng.normal(0, 3, o.shape), 0, 255).astype(np.uint8)
    return cv2.imdecode(cv2.imencode(".jpg", o, [cv2.IMWRITE_JPEG_QUALITY, 90])[1], cv2.IMREAD_COLOR)


def main(argv=None) -> dict:
    import cv2

    from smile2pay.config import QualitySettings, Settings, data_dir
    from smile2pay.errors import Smile2PayError
    from smile2pay.pipeline import FacePipeline
    from smile2pay_tools.bench import clips
    from smile2pay_tools.bench.common import write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--victims", type=int, default=200)
    ap.add_argument("--out", default="benchmarks/results/scene_cue_probe.json")
    a = ap.parse_args(argv)
    data = data_dir()
    pipe = FacePipeline(Settings.from_env(quality=QualitySettings(), threads=1))
    rng = np.random.default_rng(0)
    att, same, names = [], [], []
    for p in clips.lfw_expression_people(data)[:a.victims]:
        try:
            im_a, im_b = cv2.imread(str(data / p["neutral"][1])), cv2.imread(str(data / p["happy"][0]))
            im_a2 = perturb(im_a, rng)
            ta, tb, ta2 = (torso(im, pipe.single(im, pick="center", embed=False, au=False).bbox)
                           for im in (im_a, im_b, im_a2))
        except Smile2PayError:
            continue
        if ta is None or tb is None or ta2 is None:
            continue
        att.append(float(np.linalg.norm(ta - tb)))
        same.append(float(np.linalg.norm(ta - ta2)))
        names.append(p["subject"])
    att_a, same_a = np.array(att), np.array(same)
    p99, mx = float(np.percentile(same_a, 99)), float(same_a.max())
    res = {"benchmark": "scene_cue_probe", "date": time.strftime("%Y-%m-%d"),
           "command": "python benchmarks/scene_cue_probe.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "pairs": len(att), "same_capture_synthetic": {"median": round(float(np.median(same_a)), 2),
                                                         "p99": round(p99, 2), "max": round(mx, 2)},
           "two_photos": {"median": round(float(np.median(att_a)), 2)},
           "two_photos_flagged_at_same_capture_p99": round(float((att_a > p99).mean()), 4),
           "two_photos_flagged_at_same_capture_max": round(float((att_a > mx).mean()), 4),
           "residual_approved_pairs": {n: round(att[names.index(n)], 2) for n in
                                       ("Kwon_Yang-sook", "Hector_Babenco", "Larry_Brown") if n in names},
           "verdict": "not adopted: weak separation even against synthetic same-capture copies"}
    print(json.dumps(res, indent=1))
    write_json(a.out, res)
    return res


if __name__ == "__main__":
    main()
