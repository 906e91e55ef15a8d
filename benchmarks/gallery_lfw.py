"""LFW open-set identification through the real enrolment path.

1. Enrol every LFW person with >= 2 images from ONE image (the first in manifest order) with the
   batch enroller (2 worker processes x 1 ORT thread, quality gates and duplicate check on,
   ``pick=center``: LFW's protocol face). Measures enrolment throughput (images/s).
2. Identify their other images (closed-set rank-1, and rank-1 *accepted* at the identity threshold).
3. Open-set false accepts: people with exactly one image (never enrolled) whose best gallery score
   reaches the threshold.

Probe embeddings come from ``results/lfw_embeddings.npz`` (same pipeline; gallery_embed_lfw.py).

    nice python benchmarks/gallery_lfw.py [--workers 2] [--threshold 0.42]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("SMILE2PAY_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--models", default=os.environ.get("SMILE2PAY_MODELS", str(REPO.parent / "shared" / "models")))
    ap.add_argument("--npz", default=str(REPO / "results" / "lfw_embeddings.npz"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=None, help="default: the SDK default (0.42)")
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "gallery_lfw.json"))
    args = ap.parse_args(argv)

    from smile2pay.config import DEFAULT_IDENTITY_THRESHOLD, Settings
    from smile2pay.gallery import Gallery
    from smile2pay.gallery.batch import plan_manifest, run_batch
    from smile2pay.pipeline import FacePipeline

    thr = DEFAULT_IDENTITY_THRESHOLD if args.threshold is None else args.threshold
    data = Path(args.data)
    rows = list(csv.DictReader(open(data / "lfw" / "manifest.csv")))
    by = defaultdict(list)
    for r in rows:
        by[r["subject"]].append(r)
    multi = [s for s in by if len(by[s]) >= 2]
    single = [s for s in by if len(by[s]) == 1]
    tmp = Path(tempfile.mkdtemp(prefix="s2p-lfw-"))
    man = tmp / "enrol.csv"
    with open(man, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user_id", "image_path", "kind"])
        for s in multi:
            r = by[s][0]
            w.writerow([s, str(data / r["path"]), "smile" if r["label"] == "happiness" else "neutral"])
    settings = Settings.from_env(models=args.models, threads=1)
    fp = FacePipeline(settings).model_fingerprint
    gallery = Gallery(tmp / "gallery", fingerprint=fp, identity_threshold=thr)
    t0 = time.perf_counter()
    report = run_batch(gallery, plan_manifest(man), settings, workers=args.workers, pick="center")
    wall = time.perf_counter() - t0
    print(f"enrolled {report['counts']} in {wall:.1f}s ({report['images_per_s']} img/s incl. worker start)",
          file=sys.stderr)

    z = np.load(args.npz)
    emb = {str(p): e for p, e in zip(z["paths"], z["emb"])}
    enrolled = set(gallery.list())
    probes = [(s, r["path"]) for s in multi if s in enrolled for r in by[s][1:] if r["path"] in emb]
    t1 = time.perf_counter()
    rank1 = rank1_acc = rank5 = 0
    for s, p in probes:
        m = gallery.identify(emb[p], k=5)
        rank1 += m[0].user_id == s
        rank1_acc += m[0].user_id == s and m[0].match
        rank5 += any(x.user_id == s for x in m)
    t_probe = time.perf_counter() - t1
    imp_scores = []
    for s in single:
        p = by[s][0]["path"]
        if p in emb:
            imp_scores.append(gallery.identify(emb[p], k=1)[0].score)
    imp_scores = np.array(imp_scores)
    n = len(probes)
    far_at = {f"{t:.2f}": float(np.mean(imp_scores >= t)) for t in (0.23, 0.30, 0.35, 0.40, 0.42, 0.45, 0.50)}
    out = {
        "gallery": {"people_with_2plus_images": len(multi), **report["counts"], "enrolled_users": len(enrolled),
                    "rejected_reasons": _reasons(report), "duplicates": report["duplicates"][:20]},
        "enrolment_throughput": {"images": report["images"], "images_per_s": report["images_per_s"],
                                 "wall_s": report["wall_s"], "workers": args.workers, "ort_threads_per_worker": 1,
                                 "includes_worker_startup": True, "worker_cpu_s": report.get("worker_cpu_s"),
                                 "images_per_cpu_s": report.get("images_per_cpu_s"),
                                 "projected_images_per_s_on_free_cores": (
                                     round(report["images_per_cpu_s"] * args.workers, 2)
                                     if report.get("images_per_cpu_s") else None),
                                 "load_average_at_end": os.getloadavg()},
        "threshold": thr,
        "closed_set": {"probes": n, "rank1": rank1 / n, "rank5": rank5 / n},
        "open_set": {"rank1_accepted_at_threshold": rank1_acc / n, "nonenrolled_probes": len(imp_scores),
                     "false_accept_rate_at_threshold": float(np.mean(imp_scores >= thr)),
                     "false_accepts": int(np.sum(imp_scores >= thr)),
                     "far_by_threshold": far_at,
                     "nonenrolled_best_score_p99": float(np.quantile(imp_scores, 0.99)),
                     "nonenrolled_best_score_max": float(imp_scores.max())},
        "identify_ms_per_probe": round(1000 * t_probe / max(n, 1), 3),
        "command": "python benchmarks/gallery_lfw.py " + " ".join(argv or sys.argv[1:]),
    }
    gallery.close()
    shutil.rmtree(tmp, ignore_errors=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


def _reasons(report) -> dict:
    c: dict[str, int] = defaultdict(int)
    for r in report["rejected"]:
        for im in r["images"]:
            for x in im["reasons"]:
                c[x] += 1
    return dict(c)


if __name__ == "__main__":
    sys.exit(main())
