"""``smile2pay calibrate-continuity``: the capture-continuity limits from a deployment's own same-session captures.

The shipped limits (``capture_continuity`` / ``capture_continuity_stream`` of the calibration file) were fitted on
CK+ lab sequences: 48 px grey crops, one camera, still heads. A till camera, its auto-exposure and its shoppers
move more, and a limit fitted on someone else's captures either declines genuine shoppers or lets two photos
through. Like ``calibrate`` for identity and ``calibrate-au`` for the smile, this fits the limits on frames like
the deployment's.

Input (``--sessions``): a CSV ``path,session`` of frames from bona fide captures, several frames per session
(a burst, or frames sampled from one stream); paths relative to the CSV's folder or absolute. Every pair of
frames of a session is a same-session change (:func:`smile2pay.decision.continuity.pair_change`). Sessions are
split in two halves by a hash of their id: the limits come from the **tune** half (each cue's scale its
``--percentile`` over the pairs, the limit the largest joint score times ``--margin``:
:func:`smile2pay.decision.continuity.fit_settings`), the **check** half reports what they cost (flagged share of
its pairs). ``--attacks`` (optional, same format; each "session" is two or more *different photos* of one
person, the attack to stop) is only reported, never fitted on.

Writes the ``capture_continuity`` section (bursts) and, with ``--section both`` (default) or ``streams``, the
``capture_continuity_stream`` section, keeping the rest of the input calibration file.
"""
from __future__ import annotations

import argparse
import itertools
import time
import zlib
from collections import defaultdict
from pathlib import Path

from smile2pay.errors import RequestError, Smile2PayError

SECTIONS = ("both", "bursts", "streams")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sessions", required=True, help="CSV path,session: frames of bona fide same-session captures")
    p.add_argument("--attacks", help="CSV path,session of different photos of one person (reported, not fitted)")
    p.add_argument("--calibration", help="calibration file to start from (default: the shipped one)")
    p.add_argument("--out", required=True, help="calibration JSON to write (other sections copied unchanged)")
    p.add_argument("--section", choices=SECTIONS, default="both",
                   help="which limits to write: bursts (capture_continuity), streams (capture_continuity_stream) "
                        "or both (default)")
    p.add_argument("--cues", choices=("six", "four"), default="six",
                   help="six: pose, lighting pattern, light balance and contrast (default); four: without the last two")
    p.add_argument("--window", choices=("face", "full"), default="face",
                   help="face: the lighting cues read the face inside the aligned crop (FACE_WINDOW, default); "
                        "full: the whole crop, as limits fitted before 2026-12-07")
    p.add_argument("--percentile", type=float, default=75.0, help="each cue's scale: this percentile (default 75)")
    p.add_argument("--margin", type=float, default=1.0, help="limit = largest tune-half joint score x margin")
    p.add_argument("--max-frames", type=int, default=12, help="frames read per session (default 12)")
    p.add_argument("--no-progress", action="store_true")


def read_sessions(path: str | Path, what: str = "sessions") -> dict[str, list[str]]:
    from .calibrate_au import read_csv_rows

    p, rows, lines = read_csv_rows(path, ("path", "session"), what)
    out: dict[str, list[str]] = defaultdict(list)
    for i, r in zip(lines, rows):
        if not (r.get("path") or "").strip() or not (r.get("session") or "").strip():
            raise RequestError(f"{p} line {i}: empty path or session", code="DATASET_INVALID")
        q = Path(r["path"].strip())
        out[r["session"].strip()].append(str(q if q.is_absolute() else p.parent / q))
    return dict(out)


def _changes(pipe, sessions: dict[str, list[str]], max_frames: int, progress: bool, desc: str, skipped: dict,
             window=None):
    """{session: [pair_change of every pair of its usable frames]}."""
    from tqdm import tqdm

    from ..decision.continuity import pair_change, signature

    out = {}
    for sid, paths in tqdm(sorted(sessions.items()), desc=desc, disable=not progress, mininterval=2):
        sigs = []
        for path in paths[:max_frames]:
            try:
                f = pipe.single(path, pick="largest", embed=False, au=False)
            except Smile2PayError as e:
                skipped[e.code] += 1
                continue
            sigs.append(signature(f.identity_crop, f.landmarks, window))
        if len(sigs) >= 2:
            out[sid] = [pair_change(a, b) for a, b in itertools.combinations(sigs, 2)]
        else:
            skipped["SESSION_UNDER_2_FRAMES"] += 1
    return out


def run(args) -> dict:
    from ..config import Settings
    from ..decision.continuity import ALL_CUES, FACE_WINDOW, FOUR_CUES, excess, fit_settings
    from ..decision.policy import write_calibration
    from ..pipeline import FacePipeline
    from .calibrate_au import starting_calibration

    t0 = time.time()
    if not 0.0 < args.margin <= 10.0:
        raise RequestError(f"--margin must be in (0, 10], got {args.margin}", code="REQUEST_INVALID")
    if not 0.0 < args.percentile <= 100.0:
        raise RequestError(f"--percentile must be in (0, 100], got {args.percentile}", code="REQUEST_INVALID")
    if args.max_frames < 2:
        raise RequestError(f"--max-frames must be >= 2, got {args.max_frames}", code="REQUEST_INVALID")
    sessions = read_sessions(args.sessions)
    attacks = read_sessions(args.attacks, "attacks") if args.attacks else {}
    cal_in, cal = starting_calibration(args.calibration)
    pipe = FacePipeline(Settings.from_env(models=getattr(args, "models", None)))
    skipped: dict[str, int] = defaultdict(int)
    window = FACE_WINDOW if getattr(args, "window", "face") == "face" else None
    same = _changes(pipe, sessions, args.max_frames, not args.no_progress, "sessions", skipped, window)
    tune_ids = [s for s in same if zlib.crc32(s.encode()) % 2 == 0]
    check_ids = [s for s in same if zlib.crc32(s.encode()) % 2 == 1]
    if not tune_ids or not check_ids:
        raise RequestError(f"calibrate-continuity needs sessions with >= 2 usable frames in both halves (usable "
                           f"sessions {len(same)} of {len(sessions)}; skipped {dict(skipped)})",
                           code="DATASET_INVALID")
    tune = [c for s in tune_ids for c in same[s]]
    cues = ALL_CUES if args.cues == "six" else FOUR_CUES
    lim = fit_settings(tune, cues, args.percentile, args.margin, window)

    def flagged(ids, changes):
        """Sessions with any pair over the limit (a burst is judged on every pair of its frames)."""
        n = sum(any(excess(c, lim) > 1.0 for c in changes[s]) for s in ids)
        return {"sessions": len(ids), "flagged": int(n), "rate": round(n / len(ids), 4) if ids else None}

    res = {"out": str(args.out), "sessions": len(sessions), "usable_sessions": len(same), "skipped": dict(skipped),
           "limits": {**{f"scale_{k}": round(v, 5) for k, v in lim.scales().items()},
                      "max_score": round(lim.max_score, 4), "margin": args.margin, "cues": list(lim.scales()),
                      **({"window": list(window)} if window is not None else {})},
           "same_session_flagged": {"check_half": flagged(check_ids, same),
                                    "tune_half_in_sample": flagged(tune_ids, same)}}
    if attacks:
        att = _changes(pipe, attacks, args.max_frames, not args.no_progress, "attacks", skipped, window)
        res["attacks_flagged"] = flagged(list(att), att)
    note = f"smile2pay calibrate-continuity --sessions {args.sessions} ({time.strftime('%Y-%m-%d')})"
    section = {**res["limits"], "measured": res["same_session_flagged"], "command": note,
               "from": f"scales: {args.percentile:g}th percentile, limit: max joint score over the tune half "
                       f"({len(tune_ids)} sessions, {len(tune)} pairs) x margin"}
    if args.section in ("both", "bursts"):
        cal["capture_continuity"] = section
    if args.section in ("both", "streams"):
        cal["capture_continuity_stream"] = section
    cal.setdefault("history", []).append({"continuity_from": str(cal_in), "date": time.strftime("%Y-%m-%d")})
    write_calibration(args.out, cal)
    res["seconds"] = round(time.time() - t0, 1)
    return res


def summary(res: dict) -> str:
    c = res["same_session_flagged"]["check_half"]
    out = (f"wrote {res['out']}: {len(res['limits']['cues'])} cues, limit {res['limits']['max_score']}; "
           f"check half: {c['flagged']} of {c['sessions']} bona fide sessions flagged "
           f"(usable {res['usable_sessions']} of {res['sessions']} sessions)")
    if "attacks_flagged" in res:
        a = res["attacks_flagged"]
        out += f"; attacks flagged {a['flagged']} of {a['sessions']}"
    return out
