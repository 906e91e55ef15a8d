"""A burst's first look (``Settings.burst_first_look``) against the ladder it replaces, on the two-photo attack:
the same 200 LFW victims and photos as ``benchmarks/two_photo_attack.py`` (plain burst ``[neutral, smile]``, the
cross-faded burst, the burst of the photos cut to the face), run once with the look (128, the default) and once
with ``burst_first_look=0``; every victim whose decision or reasons differ is listed.

    python benchmarks/first_look_compare.py [--max-victims 200]

Writes benchmarks/results/first_look_compare.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _decide(s2p, pipe, data, p, xfade):
    from smile2pay.errors import FaceError
    from smile2pay_tools.bench import clips
    from smile2pay_tools.bench.two_photo_attack import _victim_crop

    out = {}
    d = s2p.verify(p["subject"], [str(data / p["neutral"][1]), str(data / p["happy"][0])])
    out["burst"] = d.reasons or ["APPROVED"]
    a, b = clips.read(data / p["neutral"][1]), clips.read(data / p["happy"][0])
    out["burst_crossfade"] = s2p.verify(p["subject"], [a, *clips.crossfade(a, b, xfade), b]).reasons or ["APPROVED"]
    try:
        ca, cb = _victim_crop(pipe, a), _victim_crop(pipe, b)
        out["burst_cropped"] = s2p.verify(p["subject"], [ca, cb]).reasons or ["APPROVED"]
    except FaceError:
        out["burst_cropped"] = None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-victims", type=int, default=200)
    ap.add_argument("--xfade", type=int, default=6)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "first_look_compare.json"))
    args = ap.parse_args(argv)
    from smile2pay.api import Smile2Pay
    from smile2pay.config import QualitySettings, Settings, data_dir
    from smile2pay.decision.lockout import GuardSettings
    from smile2pay.gallery import generate_key
    from smile2pay.pipeline import FacePipeline
    from smile2pay_tools.bench.two_photo_attack import enrol_victims

    t0 = time.perf_counter()
    data = data_dir()
    tmp = Path(tempfile.mkdtemp(prefix="s2p-look-"))
    runs = {}
    for look in (128, 0):
        pipe = FacePipeline(Settings.from_env(quality=QualitySettings(), threads=1, burst_first_look=look))
        with Smile2Pay(tmp / f"look{look}", pipeline=pipe, key=generate_key(),
                       guard_settings=GuardSettings(max_failures=10 ** 9)) as s2p:
            victims = enrol_victims(s2p, data, args.max_victims)
            runs[look] = {p["subject"]: _decide(s2p, pipe, data, p, args.xfade) for p in victims}
    kinds = ("burst", "burst_crossfade", "burst_cropped")
    differ = {}
    for subj, new in runs[128].items():
        old = runs[0].get(subj)
        if old != new:
            differ[subj] = {"first_look": new, "ladder": old}
    approved = {k: {"first_look": sum(r[k] == ["APPROVED"] for r in runs[128].values()),
                    "ladder": sum(r[k] == ["APPROVED"] for r in runs[0].values())} for k in kinds}
    res = {"benchmark": "first_look_compare", "date": time.strftime("%Y-%m-%d"),
           "command": "python benchmarks/first_look_compare.py " + " ".join(argv or sys.argv[1:]),
           "victims": len(runs[128]), "approved": approved, "victims_differing": len(differ),
           "approval_changed": sorted(s for s, v in differ.items()
                                      if any((v["first_look"][k] == ["APPROVED"]) != (v["ladder"][k] == ["APPROVED"])
                                             for k in kinds)),
           "differing": differ, "seconds": round(time.perf_counter() - t0, 1)}
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    for k in kinds:
        print(f"{k:18s} approved: first look {approved[k]['first_look']} / ladder {approved[k]['ladder']} "
              f"of {res['victims']}")
    print(f"victims whose reasons differ: {len(differ)}; approval changed: {res['approval_changed']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
