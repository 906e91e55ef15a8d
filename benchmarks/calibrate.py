"""Calibrate identity thresholds at target FARs on real populations; write the policy file.

Usage:
    python benchmarks/calibrate.py [--far 1e-3 1e-4 1e-5] [--bootstrap 100]
        [--out smile2pay/decision/calibration/mobile.json]

Every cross-subject pair of each dataset is an impostor comparison (LFW: 7,701 images -> ~29.6M;
CK+ 48x48, neutral + peak frames: ~1.7M), every same-subject pair a genuine one. Thresholds do
not travel between populations (MEASURING.md: a studio population needed cos 0.46 where LFW
needed 0.23 at FAR 1e-3), so the shipped default takes, at each FAR, the **strictest** threshold
over the populations measured, and records each population's own value beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _common import detect_all, detection_key, embed_all, make_pipeline, read_csv  # noqa: E402

from smile2pay.metrics.calibration import calibrate  # noqa: E402


def load_population(pipe, data: Path, name: str) -> tuple[np.ndarray, list[str]]:
    if name == "lfw":
        rows = read_csv(data / "lfw" / "manifest.csv")
    elif name == "ckplus":
        rows = read_csv(data / "ckplus48" / "manifest.csv") + read_csv(data / "ckplus_neutral_peak48" / "manifest.csv")
    else:
        raise SystemExit(f"unknown population {name}")
    paths = [r["path"] for r in rows]
    subjects = [r["subject"] for r in rows]
    dets, _ = detect_all(pipe, paths, data, name, desc=f"detect {name}")
    emb, found, _ = embed_all(pipe, paths, dets, data, detection_key(pipe, name), desc=f"embed {name}")
    missing = int((~found).sum())
    if missing:
        print(f"{name}: {missing} images without a face are left out of calibration", file=sys.stderr)
    return emb[found], [s for s, f in zip(subjects, found) if f]


def main() -> int:
    data = Path(os.environ.get("SMILE2PAY_DATA", REPO.parent / "shared" / "data"))
    models = os.environ.get("SMILE2PAY_MODELS", str(REPO.parent / "shared" / "models"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--far", type=float, nargs="+", default=[1e-3, 1e-4, 1e-5])
    ap.add_argument("--bootstrap", type=int, default=100)
    ap.add_argument("--populations", nargs="+", default=["lfw", "ckplus"])
    ap.add_argument("--out", default=str(REPO / "smile2pay" / "decision" / "calibration" / "mobile.json"))
    ap.add_argument("--au-from", help="merge the 'au' section of this JSON (per-AU thresholds) into the file")
    args = ap.parse_args()

    pipe = make_pipeline(models)
    pops = {}
    for name in args.populations:
        t0 = time.perf_counter()
        emb, subj = load_population(pipe, data, name)
        pops[name] = calibrate(emb, subj, fars=tuple(args.far), bootstrap=args.bootstrap)
        pops[name]["seconds"] = round(time.perf_counter() - t0, 1)
        for op in pops[name]["operating_points"]:
            lo, hi = op["threshold_ci95_subject_bootstrap"]
            print(f"{name:7s} FAR {op['far']:.0e}: threshold {op['threshold']:.4f} "
                  f"(subject-bootstrap 95% [{lo:.4f}, {hi:.4f}]), {op['false_accepts']} false accepts of "
                  f"{op['impostors']:,} impostor pairs, TAR {op['tar']:.4f} of {op['genuine']:,} genuine"
                  f"{'' if op['supported'] else '  (NOT supported by the impostor count)'}")
    default_ops = []
    for i, far in enumerate(args.far):
        cands = [(p["operating_points"][i]["threshold"], name) for name, p in pops.items()]
        t, src = max(cands)
        op = dict(pops[src]["operating_points"][i])
        op["population"] = src
        op["per_population"] = {name: p["operating_points"][i]["threshold"] for name, p in pops.items()}
        default_ops.append(op)
    out = Path(args.out)
    prev = json.loads(out.read_text()) if out.exists() else {}
    cal = {
        "format": "smile2pay.calibration/1",
        "model": pipe.model_fingerprint,
        "created": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/calibrate.py " + " ".join(sys.argv[1:]),
        "note": ("default = strictest threshold over the populations at each FAR; thresholds do not "
                 "travel between populations: calibrate on data like the deployment's"),
        "identity": {"operating_points": default_ops, "populations": pops},
        "au": prev.get("au", {}),
    }
    if args.au_from:
        cal["au"] = json.loads(Path(args.au_from).read_text())["au"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(cal, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
