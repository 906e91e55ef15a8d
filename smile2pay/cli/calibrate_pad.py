"""``smile2pay calibrate-pad``: the passive-PAD threshold from a deployment's own camera frames.

The shipped threshold (``pad.threshold`` of the calibration file, p_real 0.0938) is the 5 % BPCER point of LFW
news photos. It does not travel: the same models reject 9 % of LFW faces seen through a simulated till camera and
nearly every upscaled 48 px face (``benchmarks/results/pad_attacks.json``), which is why the shipped mode is
``report``. Like ``calibrate`` for identity and ``calibrate-continuity`` for the two-photo check, this measures
the threshold on frames like the deployment's, so that ``pad`` can be enforced.

Input (``--bona-fide``): a folder of images (searched recursively for .jpg, .jpeg, .png, .bmp, .webp) or a CSV with
a ``path`` column (relative to the CSV's folder or absolute) and optionally ``group`` (a person or session: frames
of one group stay in one half). One face per frame (the largest) is scored exactly as ``verify()`` scores it
(:meth:`smile2pay.Smile2Pay.pad_score`): faces whose short side is under ``--min-face-px`` are not scored. Frames are
split in two halves by a hash of their group (or path): the threshold is the ``--bpcer`` point of the **tune**
half's scores; the **check** half reports what it costs. ``--attacks`` (optional, folder or CSV with ``path`` and
optionally ``species``) is reported per species (APCER), never fitted on.

Writes the ``pad`` section (threshold, mode, min_face_px, what it was measured on), keeping the rest of the input
calibration file.
"""
from __future__ import annotations

import argparse
import math
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

from smile2pay.errors import RequestError, Smile2PayError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MODES = ("enforce", "report", "off")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bona-fide", required=True,
                   help="folder of bona fide camera frames, or CSV path[,group]")
    p.add_argument("--attacks", help="folder or CSV path[,species] of attack frames (reported, not fitted)")
    p.add_argument("--calibration", help="calibration file to start from (default: the shipped one)")
    p.add_argument("--out", required=True, help="calibration JSON to write (other sections copied unchanged)")
    p.add_argument("--bpcer", type=float, default=0.05,
                   help="share of bona fide faces the threshold may reject (default 0.05)")
    p.add_argument("--mode", choices=MODES,
                   help="PAD mode to write: enforce (decline PRESENTATION_ATTACK), report or off; default: keep "
                        "the input file's mode")
    p.add_argument("--min-face-px", type=float,
                   help="faces whose short side is smaller are not scored (default: the input file's, 64)")
    p.add_argument("--no-progress", action="store_true")


def read_images(source: str | Path, what: str, label: str, top: str | None = None) -> list[tuple[str, str]]:
    """[(absolute path, label value)] from a folder (label = the file's folder relative to ``source``; for files
    directly in it ``top``, or the file's own name when ``top`` is None) or a CSV with a ``path`` column and an
    optional ``label`` column (empty: ``top``, or the path)."""
    from .calibrate_au import read_csv_rows

    src = Path(source)
    if src.is_dir():
        paths = sorted(q for q in src.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise RequestError(f"{what}: no images ({', '.join(IMAGE_SUFFIXES)}) under {src}",
                               code="DATASET_INVALID")
        return [(str(q), str(q.parent.relative_to(src)) if q.parent != src else (top or q.name)) for q in paths]
    if not src.exists():
        raise RequestError(f"{what} not found: {src} (a folder of images or a CSV with a path column)",
                           code="DATASET_NOT_FOUND")
    p, rows, lines = read_csv_rows(src, ("path",), what)
    out = []
    for i, r in zip(lines, rows):
        path = (r.get("path") or "").strip()
        if not path:
            raise RequestError(f"{p} line {i}: empty path", code="DATASET_INVALID")
        q = Path(path)
        out.append((str(q if q.is_absolute() else p.parent / q), (r.get(label) or "").strip() or top or path))
    return out


def _score_all(pipe, pad, min_face: float, items, progress: bool, desc: str, skipped: Counter
               ) -> list[tuple[str, float | None]]:
    """[(label, p_real, or None when the face is too small to score)], scored as ``Smile2Pay.pad_score`` does;
    frames without a usable face are counted in ``skipped`` by error code."""
    from tqdm import tqdm

    out = []
    for path, label in tqdm(items, desc=desc, disable=not progress, mininterval=2):
        try:
            img = pipe.load(path)
            face = pipe.single(img, pick="largest", embed=False, au=False)
        except Smile2PayError as e:
            skipped[e.code] += 1
            continue
        small = min(face.width, face.height) < min_face
        out.append((label, None if small else float(pad.score(img, face.bbox))))
    return out


def _rate(k: int, n: int) -> dict:
    return {"rate": round(k / n, 4) if n else None, "errors": int(k), "n": int(n)}


def run(args) -> dict:
    from ..config import Settings
    from ..decision.policy import CALIBRATION_DIR, Policy, load_calibration, write_calibration
    from ..pipeline import FacePipeline
    from ..vision.pad import PresentationAttackDetector, threshold_at_bpcer

    t0 = time.time()
    if not (isinstance(args.bpcer, float) and 0.0 < args.bpcer < 0.5):
        raise RequestError(f"--bpcer must be in (0, 0.5), got {args.bpcer}", code="REQUEST_INVALID")
    if args.min_face_px is not None and not (math.isfinite(args.min_face_px) and args.min_face_px > 0):
        raise RequestError(f"--min-face-px must be a positive number, got {args.min_face_px}",
                           code="REQUEST_INVALID")
    bona = read_images(args.bona_fide, "bona fide frames", "group")
    attacks = read_images(args.attacks, "attack frames", "species", top="attacks") if args.attacks else []
    cal_in = Path(args.calibration) if args.calibration else CALIBRATION_DIR / "mobile.json"
    cal = load_calibration(cal_in)
    policy = Policy.from_calibration(cal_in)
    min_face = float(args.min_face_px) if args.min_face_px is not None else policy.pad_min_face_px
    pipe = FacePipeline(Settings.from_env(models=getattr(args, "models", None)))
    pad = PresentationAttackDetector.from_pipeline(pipe)      # ModelError MODEL_MISSING if the pack lacks them
    skipped: Counter = Counter()
    scored = _score_all(pipe, pad, min_face, bona, not args.no_progress, "bona fide", skipped)
    att = _score_all(pipe, pad, min_face, attacks, not args.no_progress, "attacks", Counter()) if attacks else []
    # surrogateescape: a folder name that is not UTF-8 hashes as its own bytes
    tune = [s for g, s in scored if zlib.crc32(g.encode("utf-8", "surrogateescape")) % 2 == 0]
    check = [s for g, s in scored if zlib.crc32(g.encode("utf-8", "surrogateescape")) % 2 == 1]
    need = max(20, math.ceil(1.0 / args.bpcer))
    tune_scored = [s for s in tune if s is not None]
    if len(tune_scored) < need or not [s for s in check if s is not None]:
        raise RequestError(
            f"calibrate-pad needs at least {need} scored bona fide faces in the tune half and some in the check "
            f"half (tune {len(tune_scored)}, check {sum(s is not None for s in check)}; faces under {min_face:g} px "
            f"{sum(s is None for _, s in scored)}; frames without a usable face {dict(skipped)})",
            code="DATASET_INVALID")
    # six decimals, rounded down: the written threshold rejects no face the measured one accepted
    t = math.floor(threshold_at_bpcer(tune_scored, args.bpcer) * 1e6) / 1e6

    def bpcer(scores):
        sc = [s for s in scores if s is not None]
        small = sum(s is None for s in scores)
        return {"scored": _rate(sum(s < t for s in sc), len(sc)),
                "too_small_faces": small,
                "enforced_including_too_small": _rate(sum(s < t for s in sc) + small, len(scores))}

    res = {"out": str(args.out), "frames": len(bona), "faces": len(scored), "skipped": dict(skipped),
           "threshold": t, "bpcer_target": args.bpcer, "min_face_px": min_face,
           "bpcer": {"check_half": bpcer(check), "tune_half_in_sample": bpcer(tune)}}
    if attacks:
        by: dict[str, list] = defaultdict(list)
        for sp, s in att:
            by[sp].append(s)
        res["apcer"] = {sp: {"scored": _rate(sum(s >= t for s in v if s is not None), sum(s is not None for s in v)),
                             "too_small_faces": sum(s is None for s in v)} for sp, v in sorted(by.items())}
        res["attack_frames"] = len(attacks)
    old = cal.get("pad") or {}
    mode = args.mode or old.get("mode", "report")
    section = {k: v for k, v in old.items() if k not in ("why_report", "threshold_rule", "command", "created",
                                                         "measured")}
    section.update({"mode": mode, "threshold": t, "min_face_px": min_face,
                    "threshold_rule": f"BPCER {args.bpcer:g} on the tune half of {args.bona_fide} "
                                      f"({len(tune_scored)} faces)",
                    "measured": {"bpcer": res["bpcer"], **({"apcer": res["apcer"]} if attacks else {})},
                    "command": f"smile2pay calibrate-pad --bona-fide {args.bona_fide}"
                               + (f" --attacks {args.attacks}" if args.attacks else ""),
                    "created": time.strftime("%Y-%m-%d")})
    cal["pad"] = section
    cal.setdefault("history", []).append({"pad_from": str(cal_in), "date": time.strftime("%Y-%m-%d")})
    write_calibration(args.out, cal)
    Policy.from_calibration(args.out)          # the file must load the way verify() loads it
    res["mode"] = mode
    res["seconds"] = round(time.time() - t0, 1)
    return res


def summary(res: dict) -> str:
    c = res["bpcer"]["check_half"]["scored"]
    out = (f"wrote {res['out']}: PAD threshold {res['threshold']:.4f} (mode {res['mode']}); check half BPCER "
           f"{c['errors']} of {c['n']} bona fide faces")
    for sp, a in (res.get("apcer") or {}).items():
        out += f"; APCER {sp} {a['scored']['errors']} of {a['scored']['n']}"
    return out
