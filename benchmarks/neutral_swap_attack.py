"""One smiling photo of the victim held up after the attacker's own neutral face: what the neutral frame's
identity check is worth (issue: latency, "identity only where it decides").

The cheapest change-from-neutral attack needs one public smiling photo of the victim, not two: the attacker stands
in front of the till with a neutral face, then holds the victim's smiling photo where their face was. A burst then
shows a neutral face (the attacker's) followed by a smile (the victim's). With ``identity_frames="decision"`` (the
default) both the neutral and the smile frame are embedded; with ``"smile"`` only the smile frame is, the neutral
frame being linked to it by box IoU, so only the capture-continuity check is left to tell the two faces apart.

LFW stands in for both people: the victim (every LFW person with >= 2 neutral and >= 1 happy photo, as
``benchmarks/two_photo_attack.py``; enrolled from one neutral photo) and the attacker (the next victim of the
list, a different person, their neutral photo). Each photo is cut to its centre face grown by 35 % on every side (tighter than the two-photo attack's 60 %, so that fewer other people of the news photo come along)
and composed at the same size and place of a 640x480 canvas with sensor noise (the photo held where the face was),
4-frame bursts [attacker x2, victim's smile x2] through ``Smile2Pay.verify`` in both identity modes, same frames.

    python benchmarks/neutral_swap_attack.py [--max-victims 200]

Writes benchmarks/results/neutral_swap_attack.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import _common as C  # noqa: E402
from smile2pay.reasons import APPROVED  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-victims", type=int, default=200)
    ap.add_argument("--out", default=str(C.RESULTS_DIR / "neutral_swap_attack.json"))
    args = ap.parse_args(argv)

    from smile2pay import Smile2Pay
    from smile2pay.config import QualitySettings, Settings, data_dir
    from smile2pay.decision.lockout import GuardSettings
    from smile2pay.errors import FaceError
    from smile2pay.gallery import generate_key
    from smile2pay.pipeline import FacePipeline
    from smile2pay_tools.bench import clips
    from smile2pay_tools.bench.two_photo_attack import _victim_crop, enrol_victims

    t0 = time.perf_counter()
    data = data_dir()
    pipe = FacePipeline(Settings.from_env(quality=QualitySettings(), threads=1))
    tmp = Path(tempfile.mkdtemp(prefix="s2p-swap-"))
    modes = ("decision", "smile")
    stats = {m: {"approved": 0, "n": 0, "reasons": Counter()} for m in modes}
    with Smile2Pay(tmp / "g", pipeline=pipe, key=generate_key(),
                   guard_settings=GuardSettings(max_failures=10 ** 9)) as s2p:
        victims = enrol_victims(s2p, data, args.max_victims)
        for k, p in enumerate(C._c.progress(victims, "neutral swap")):
            attacker = victims[(k + 1) % len(victims)]
            try:
                own = _victim_crop(pipe, clips.read(data / attacker["neutral"][1]), margin=0.35)
                photo = _victim_crop(pipe, clips.read(data / p["happy"][0]), margin=0.35)
            except FaceError:
                continue
            frames = clips.clip_frames([(own, 2), (photo, 2)], seed=k)
            for m in modes:
                s2p.identity_frames = m
                d = s2p.verify(p["subject"], frames)
                st = stats[m]
                st["n"] += 1
                st["approved"] += int(d.approved)
                st["reasons"][",".join(d.reasons) or APPROVED] += 1
        s2p.identity_frames = "decision"
    res = {"benchmark": "neutral swap attack", "date": time.strftime("%Y-%m-%d"), "machine": C.machine(),
           "command": f"python benchmarks/neutral_swap_attack.py --max-victims {args.max_victims}",
           "victims": len(victims),
           "identity_frames": {m: {"approved": v["approved"], "n": v["n"],
                                   "reasons": dict(v["reasons"].most_common(8))} for m, v in stats.items()},
           "seconds": round(time.perf_counter() - t0, 1)}
    for m, v in res["identity_frames"].items():
        print(f"identity_frames={m:9s} approved {v['approved']}/{v['n']}  {v['reasons']}")
    C.write_json(args.out, res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
