"""``smile2pay calibrate-au``: the smile gate's operating point on a deployment's own labelled frames.

Thresholds do not travel between populations (cameras, lighting, people). Like ``calibrate`` for identity,
this measures the gate on frames like the deployment's and writes the ``au`` and ``au_change`` sections of a
calibration file that ``verify()`` reads (:mod:`smile2pay.decision.policy`), and, when the pack reads the
identity network's smile probe and the file has its operating point, the ``au_probe`` section on the fused
scores the decision judges embedded frames on (same frames, the probe weight of the input file kept).

Input: a CSV ``path,subject,label[,burst]`` where ``label`` is ``neutral``, ``smile`` (the required pattern,
e.g. AU6+AU12) or ``other`` (any other expression); paths are relative to the CSV's folder or absolute.
Within a subject (or a ``burst`` when the column is given), every neutral frame is paired with every
smile/other frame of it: the neutral frame is the burst's neutral frame and the enrolled baseline, as at a
till. A smile/other frame with no neutral frame of its subject is judged absolutely.

The operating point is chosen by :func:`smile2pay.decision.au_calibration.calibrate`: the most smiles
passed with at most ``--max-fpr`` of other expressions on these frames alone (the shipped mix is not
re-measured), so prefer a CSV with a few hundred probes of each kind. The identity section and any
single-frame AU thresholds of the input file are kept as they are.
"""
from __future__ import annotations

import argparse
import csv
import logging
import math
import time
from collections import defaultdict
from pathlib import Path


from smile2pay.errors import RequestError, Smile2PayError

log = logging.getLogger("smile2pay.cli.calibrate_au")

#: fewer smile frames than this and calibrate-au warns (the smile rate it reports is too coarse to act on)
MIN_SMILES = 50
LABELS = ("neutral", "smile", "other")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", required=True, help="CSV path,subject,label[,burst] (label: neutral | smile | other)")
    p.add_argument("--rule", default="AU6+AU12", help="the rule the gate enforces (default AU6+AU12)")
    p.add_argument("--calibration", help="calibration file to start from (default: the shipped one)")
    p.add_argument("--out", required=True, help="calibration JSON to write (identity section copied unchanged)")
    p.add_argument("--max-fpr", type=float, default=0.015, help="other expressions allowed through (default 0.015)")
    p.add_argument("--max-pairs", type=int, default=20, help="probes paired with each neutral frame (default 20)")
    p.add_argument("--no-progress", action="store_true")


def read_csv_rows(path: str | Path, columns: tuple[str, ...], what: str) -> tuple[Path, list[dict], list[int]]:
    """(path, rows, line numbers) of a calibration input CSV that must have ``columns``: each row's line in the
    file (blank lines are skipped by the reader, so counting rows would misname it); a missing, unreadable or
    malformed file is a RequestError ``DATASET_INVALID`` (shared by the ``calibrate-*`` commands)."""
    p = Path(path)
    rows, lines = [], []
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:   # -sig: a spreadsheet's byte order mark
            reader = csv.DictReader(fh)
            for r in reader:
                rows.append(r)
                lines.append(reader.line_num)
    except FileNotFoundError:
        raise RequestError(f"{what} CSV not found: {p}", code="DATASET_INVALID") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise RequestError(f"cannot read {p}: {e}", code="DATASET_INVALID") from None
    if not rows or not set(columns) <= set(rows[0]):
        raise RequestError(f"{p}: needs columns {','.join(columns)} (got {list(rows[0]) if rows else 'no rows'})",
                           code="DATASET_INVALID")
    return p, rows, lines


def starting_calibration(path: str | Path | None) -> tuple[Path, dict]:
    """(path, contents) of the calibration file a ``calibrate-*`` command starts from (None: the shipped one). The
    sections the command keeps must load the way verify() loads them: a malformed one is an error now, not a
    written file that every later command refuses (shared by ``calibrate-au`` and ``calibrate-continuity``)."""
    from ..decision.policy import CALIBRATION_DIR, Policy, load_calibration

    cal_in = Path(path) if path else CALIBRATION_DIR / "mobile.json"
    cal = load_calibration(cal_in)
    Policy.from_calibration(cal_in, far=float(cal["identity"]["operating_points"][0]["far"]))
    return cal_in, cal


def read_frames(path: str | Path) -> list[dict]:
    p, rows, lines = read_csv_rows(path, ("path", "subject", "label"), "frames")
    for i, r in zip(lines, rows):
        r["label"] = (r["label"] or "").strip().lower()
        if r["label"] not in LABELS:
            raise RequestError(f"{p} line {i}: label must be one of {LABELS}, got {r['label']!r}",
                               code="DATASET_INVALID")
        if not (r["path"] or "").strip() or not (r["subject"] or "").strip():
            raise RequestError(f"{p} line {i}: empty path or subject", code="DATASET_INVALID")
        q = Path(r["path"].strip())
        r["abs"] = str(q if q.is_absolute() else p.parent / q)
    return rows


def run(args) -> dict:
    from tqdm import tqdm

    from ..config import Settings
    from ..decision.au_calibration import Probes, calibrate, calibration_section
    from ..decision.engine import fuse_probe
    from ..decision.policy import parse_probe_section, write_calibration
    from ..decision.rules import parse_rule
    from ..pipeline import FacePipeline

    t0 = time.time()
    if not 0.0 <= args.max_fpr < 1.0:
        raise RequestError(f"--max-fpr must be in [0, 1), got {args.max_fpr}", code="REQUEST_INVALID")
    if args.max_pairs < 1:
        raise RequestError(f"--max-pairs must be >= 1, got {args.max_pairs}", code="REQUEST_INVALID")
    rule = parse_rule(args.rule)
    rows = read_frames(args.frames)
    cal_in, cal = starting_calibration(args.calibration)
    pipe = FacePipeline(Settings.from_env(models=getattr(args, "models", None)))
    # the smile probe's scale too, when the pack reads a probe and the file has its operating point (the decision
    # judges embedded frames on it): the frames are embedded, and both sections are recalibrated on them
    probe_sec = parse_probe_section(cal["au_probe"], str(cal_in)) if cal.get("au_probe") else None
    use_probe = pipe.smile_probe is not None and probe_sec is not None
    probs: dict[int, dict] = {}
    fused: dict[int, dict] = {}
    skipped: dict[str, int] = defaultdict(int)
    for i, r in enumerate(tqdm(rows, desc="frames", disable=args.no_progress, mininterval=2)):
        try:
            f = pipe.single(r["abs"], pick="largest", embed=use_probe)
        except Smile2PayError as e:
            skipped[e.code] += 1
            continue
        if not f.au_probs:
            skipped["NO_AU"] += 1
            continue
        probs[i] = f.au_probs
        if use_probe:
            fused[i] = fuse_probe(f.au_probs, f.smile_probe, probe_sec["weight"], probe_sec["aus"])
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if i in probs:
            groups[r.get("burst") or r["subject"]].append(i)

    def probes_on(scale: dict[int, dict]) -> "Probes":
        probe, neutral, smile = [], [], []
        for _, idx in groups.items():
            neu = [i for i in idx if rows[i]["label"] == "neutral"]
            tgt = [i for i in idx if rows[i]["label"] != "neutral"]
            for j in tgt:
                refs = neu or [None]
                for n in refs[:args.max_pairs]:
                    probe.append(scale[j])
                    neutral.append(scale[n] if n is not None else None)
                    smile.append(rows[j]["label"] == "smile")
        if not smile or all(smile) or not any(smile):
            raise RequestError("calibrate-au needs both smile and other-expression frames that were analysed "
                               f"(analysed {len(probs)} of {len(rows)}; skipped {dict(skipped)})",
                               code="DATASET_INVALID")
        return Probes.from_dicts(Path(args.frames).stem, rule.required, probe, smile, neutral, neutral)

    pr = probes_on(probs)
    smile = list(pr.smile)
    # the figures a small set cannot resolve: said in the result (and logged), not refused
    n_smile = sum(1 for i in probs if rows[i]["label"] == "smile")
    n_other = sum(1 for i in probs if rows[i]["label"] == "other")
    warnings = []
    if args.max_fpr > 0 and n_other < math.ceil(1.0 / args.max_fpr):
        warnings.append(f"only {n_other} other-expression frames were analysed: a false-pass rate of "
                        f"{args.max_fpr:g} needs at least {math.ceil(1.0 / args.max_fpr)} to be resolved "
                        f"(with fewer, the thresholds are set so that none of them passes)")
    if n_smile < MIN_SMILES:
        warnings.append(f"only {n_smile} smile frames were analysed: each one moves the smile rate by "
                        f"{100.0 / max(n_smile, 1):.0f} points (aim for a few hundred)")
    for w in warnings:
        log.warning(w)
    try:
        res = calibrate([pr], max_fpr=args.max_fpr)
        # the probe's point keeps the shipped rise scale (its au_change.rise_scale; absent: probability)
        res_p = calibrate([probes_on(fused)], max_fpr=args.max_fpr,
                          rise_scale=probe_sec.get("rise_scale", "probability")) if use_probe else None
    except ValueError as e:
        raise RequestError(str(e), code="CALIBRATION_UNREACHABLE") from None
    note = f"smile2pay calibrate-au --frames {args.frames} ({time.strftime('%Y-%m-%d')})"
    au, change = calibration_section(res, note=note)
    cal["au"], cal["au_change"] = au, change
    if res_p is not None:
        au_p, change_p = calibration_section(res_p, note=note)
        cal["au_probe"] = {**cal["au_probe"], "model": f"smile_probe:{pipe.smile_probe.sha256}", "au": au_p,
                           "au_change": change_p, "chosen_at": {"bursts": res_p["populations"]}, "command": note}
        cal["au_probe"].pop("weights_tried", None)
    cal.setdefault("history", []).append({"au_from": str(cal_in), "date": time.strftime("%Y-%m-%d")})
    out = write_calibration(args.out, cal)
    return {"out": str(out), "frames": len(rows), "analysed": len(probs), "skipped": dict(skipped),
            "probes": len(smile), "smiles": int(sum(smile)), "thresholds": res["thresholds"], "delta": res["delta"],
            "absent_threshold": res["absent_threshold"], "rates": res["populations"],
            **({"smile_probe": {"weight": probe_sec["weight"], "thresholds": res_p["thresholds"],
                                "delta": res_p["delta"], "rise_scale": res_p["rise_scale"],
                                "absent_threshold": res_p["absent_threshold"], "rates": res_p["populations"]}}
               if res_p is not None else {}),
            "warnings": warnings, "seconds": round(time.time() - t0, 1)}


def summary(res: dict) -> str:
    r = next(iter(res["rates"].values()))
    out = (f"wrote {res['out']}: thresholds {res['thresholds']}, change >= {res['delta']}, neutral below "
           f"{res['absent_threshold']}; on {res['probes']} probes: smiles passed {r['tpr']:.3f}, "
           f"others passed {r['fpr']:.3f} (analysed {res['analysed']}/{res['frames']} frames)")
    if "smile_probe" in res:
        sp = res["smile_probe"]
        rp = next(iter(sp["rates"].values()))
        out += (f"; with the smile probe (weight {sp['weight']}): thresholds {sp['thresholds']}, change >= "
                f"{sp['delta']}{' (logit)' if sp.get('rise_scale') == 'logit' else ''}: smiles passed {rp['tpr']:.3f}, "
                f"others passed {rp['fpr']:.3f}")
    return out
