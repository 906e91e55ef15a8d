"""How small a face SCRFD still finds, in detector pixels: the measurement behind
``smile2pay.vision.track.SEEN_FACE_PX`` (a burst's first look decides only when a face half the user's height
would be at least that tall at the look's scale).

LFW images (a seeded sample; real faces, the photo's own background) are pasted at several scales on a
640x480 black canvas. The reference face is the tallest face the ladder's 320 finds on that canvas; then the
canvas is detected whole at each small size, and the face counts as found when a detection's box overlaps the
reference box (IoU >= 0.3). Found rates are reported per bin of the reference face's height at that size.

    python benchmarks/detect_min_face.py [--images 300] [--seed 0]

Writes benchmarks/results/detect_min_face.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BINS = (12, 16, 20, 24, 28, 32, 40, 56, 1000)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes", default="96,128,160")
    ap.add_argument("--scales", default="0.5,0.6,0.8,1.0,1.2,1.6")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "detect_min_face.json"))
    args = ap.parse_args(argv)
    import cv2

    from smile2pay.config import Settings, data_dir
    from smile2pay.pipeline import FacePipeline
    from smile2pay.vision import track

    pipe = FacePipeline(Settings.from_env())
    det = pipe.detector
    lfw = Path(data_dir()) / "lfw"
    files = sorted(lfw.rglob("*.jpg"))
    if not files:
        print(json.dumps({"error": f"no LFW images under {lfw}", "code": "DATA_MISSING"}))
        return 2
    rng = random.Random(args.seed)
    files = rng.sample(files, min(args.images, len(files)))
    sizes = [int(v) for v in args.sizes.split(",")]
    scales = [float(v) for v in args.scales.split(",")]
    counts = {s: {b: [0, 0] for b in range(len(BINS) - 1)} for s in sizes}
    for f in files:
        im = cv2.imread(str(f))
        if im is None:
            continue
        for k in scales:
            canvas = np.zeros((480, 640, 3), np.uint8)
            r = cv2.resize(im, None, fx=k, fy=k)
            h, w = min(r.shape[0], 480 - 20), min(r.shape[1], 640 - 60)
            canvas[20:20 + h, 60:60 + w] = r[:h, :w]
            ref = det._detect_at(canvas, 320)
            if not len(ref):
                continue
            i = int(np.argmax(ref.boxes[:, 3] - ref.boxes[:, 1]))
            for s in sizes:
                height = float(ref.boxes[i, 3] - ref.boxes[i, 1]) * s / 640.0
                b = next((j for j in range(len(BINS) - 1) if BINS[j] <= height < BINS[j + 1]), None)
                if b is None:
                    continue
                d = det._detect_at(canvas, s)
                found = any(track.box_iou(bx, ref.boxes[i]) >= 0.3 for bx in d.boxes)
                counts[s][b][0] += int(found)
                counts[s][b][1] += 1
    rows = {}
    for s in sizes:
        rows[str(s)] = [{"height_px": [BINS[b], BINS[b + 1]], "found": c[0], "faces": c[1],
                         "rate": round(c[0] / c[1], 4) if c[1] else None}
                        for b, c in counts[s].items() if c[1]]
    res = {"benchmark": "detect_min_face", "date": dt.date.today().isoformat(),
           "command": "python benchmarks/detect_min_face.py " + " ".join(argv or sys.argv[1:]),
           "data": f"LFW, {len(files)} images (seed {args.seed}) at scales {scales} on a 640x480 canvas",
           "detector": "det_500m (SCRFD-500M)", "seen_face_px": track.SEEN_FACE_PX, "by_size": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    for s in sizes:
        print(f"detector input {s}: " + ", ".join(
            f"{r['height_px'][0]}-{r['height_px'][1]} px {r['found']}/{r['faces']}" for r in rows[str(s)]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
