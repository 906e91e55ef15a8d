"""The main job as a newcomer sees it: enrol people from the shared sample photos, then verify.

``smile2pay demo``:

1. identity: enrols each person of ``samples/deepface`` from their first photo into a temporary
   gallery, then checks every other photo against its own identity (should pass) and against
   another enrolled person (should fail);
2. smile to pay: enrols CK+ subjects from a neutral frame and runs ``verify()`` on real bursts:
   the subject's own neutral -> smile burst (should pay), the smile frame repeated (a still photo:
   should not), another subject's smile claimed as this subject (should not).

The result says who was enrolled from which photo (``enrolled``), which identity threshold was used
and why (``identity``: the calibration file's threshold at FAR 1e-4, adjusted to the gallery's own
population by :meth:`smile2pay.Smile2Pay.identity_operating_point`; ``threshold_why`` in words), and
what each check proves (``proves``). :func:`report` renders it for people (``smile2pay demo``).
"""
from __future__ import annotations

import csv
import logging
import tempfile
from collections import defaultdict
from pathlib import Path

from .config import data_dir as default_data_dir
from .errors import Smile2PayError
from .reasons import APPROVED, NOT_NEUTRAL

log = logging.getLogger(__name__)

#: what each smile-to-pay case shows when it comes out as expected
PROVES = {
    "own neutral -> smile burst": "the enrolled person, smiling live, pays",
    "own smile photo shown 3 times": "a still photo of the right person does not pay",
    "another person's smile burst": "a live smile of someone else does not pay",
}


def run_demo(data: str | Path | None = None, models: str | None = None, gallery: str | None = None,
             progress: bool = True) -> dict:
    from .api import Smile2Pay

    root = Path(data).resolve() if data else Path(default_data_dir()).resolve()
    manifest = root / "samples" / "deepface" / "manifest.csv"
    if not manifest.is_file():
        raise Smile2PayError(f"sample manifest not found: {manifest} (set SMILE2PAY_DATA)", code="DATA_MISSING")
    by_subject: dict[str, list[Path]] = defaultdict(list)
    with open(manifest) as fh:
        for row in csv.DictReader(fh):
            by_subject[row["subject"]].append(root / row["path"])
    from .gallery import generate_key

    with tempfile.TemporaryDirectory(prefix="smile2pay-demo-") as tmp:
        # throwaway galleries, encrypted with a key that lives only in this process
        s2p = Smile2Pay(gallery or Path(tmp) / "gallery", models=models, key=None if gallery else generate_key())
        try:
            out = _run(s2p, by_subject, progress, root)
        finally:
            s2p.close()
        out["smile_to_pay"] = _smile_demo(root, models, Path(tmp) / "smile-gallery", key=generate_key())
    out["data"] = str(root)
    return out


def _rel(path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def threshold_why(op: dict) -> str:
    """The identity threshold's origin in words, from ``population.summary(identity_operating_point())``."""
    from .decision.population import MIN_USERS

    far, thr, users = f"{op.get('far', 1e-4):.0e}".replace("e-0", "e-"), op.get("threshold"), op.get("users", 0)
    shipped = op.get("shipped")
    if op.get("source") == "configured":
        return f"cosine >= {thr:.3f}, pinned by SMILE2PAY_IDENTITY_THRESHOLD / --threshold (self-calibration off)"
    if users >= MIN_USERS and op.get("source") == "self-calibrated":
        return (f"cosine >= {thr:.3f}, FAR {far} estimated from the impostor scores between this gallery's own "
                f"{users} users (95% bound; the shipped calibration says {shipped:.3f}, its most lenient reference "
                f"population {op.get('floor', 0):.3f})")
    if shipped is not None and thr > shipped:
        return (f"cosine >= {thr:.3f}, raised from the shipped calibration's {shipped:.3f} (FAR {far}): the "
                f"impostor scores between this gallery's own {users} users call for more (look-alike photos); "
                f"below {MIN_USERS} users the gallery can raise the threshold, never lower it")
    return (f"cosine >= {thr:.3f}, the shipped calibration's threshold at FAR {far} (the strictest population it "
            f"was measured on); with {users} users the gallery is too small to calibrate a lower one of its own "
            f"(from {MIN_USERS} users on; docs/identity_far.md)")


def _smile_demo(root: Path, models: str | None, gallery: Path, n: int = 3, key: bytes | None = None) -> dict:
    """verify() on CK+ neutral -> smile bursts (48x48 crops: the face-size gate is lowered to 12 px)."""
    from .api import Smile2Pay
    from .config import QualitySettings, Settings

    pairs = root / "ckplus_neutral_peak48" / "pairs_neutral_peak.csv"
    if not pairs.is_file():
        return {"skipped": f"{pairs} not found"}
    with open(pairs) as fh:
        smiles = [r for r in csv.DictReader(fh) if r["is_smile_au6_au12"] == "1"]
    settings = Settings.from_env(models=models, quality=QualitySettings(
        min_interocular_px=12, max_brightness=235, max_clipped_fraction=0.4))
    cases = []
    with Smile2Pay(gallery, settings=settings, key=key) as s2p:
        from .decision import population

        people = []
        for r in smiles:
            if len(people) == n or any(p["subject"] == r["subject"] for p in people):
                continue
            try:
                s2p.enroll(r["subject"], [str(root / r["neutral_path"])], kind="neutral")
                people.append(r)
            except Smile2PayError as e:
                log.info("demo: %s not enrolled (%s)", r["subject"], e.code)
        for i, r in enumerate(people):
            other = people[(i + 1) % len(people)]
            burst = [str(root / r["neutral_path"]), str(root / r["peak_path"])]
            for what, claim, frames, should in (
                    ("own neutral -> smile burst", r["subject"], burst, True),
                    ("own smile photo shown 3 times", r["subject"], [burst[1]] * 3, False),
                    ("another person's smile burst", r["subject"],
                     [str(root / other["neutral_path"]), str(root / other["peak_path"])], False)):
                d = s2p.verify(claim, frames)
                cases.append({"claim": claim, "probe": what, "approved": d.approved, "expected": should,
                              "reasons": d.reasons, "identity_score": d.identity.get("score"),
                              "frames": [_rel(f, root) for f in frames], "proves": PROVES[what]})
        op = population.summary(s2p.identity_operating_point())
        enrolled = [{"user_id": r["subject"], "photo": _rel(root / r["neutral_path"], root), "kind": "neutral"}
                    for r in people]
        au_thresholds = dict(s2p.policy.au_thresholds)
        # embedded frames are judged on AU6 / AU12 fused with the identity network's smile probe, on its own scale
        pp = s2p.smile_probe_policy(s2p.policy, None)
        probe_thresholds = {a: pp.au_thresholds[a] for a in au_thresholds if a in pp.probe_aus} if pp else {}
    right = sum(c["approved"] == c["expected"] for c in cases)
    return {"enrolled": enrolled, "identity": op, "identity_threshold": op.get("threshold"),
            "threshold_why": threshold_why(op), "au_thresholds": au_thresholds,
            "au_thresholds_with_smile_probe": probe_thresholds, "cases": cases,
            "summary": f"{right}/{len(cases)} decisions as expected"}


def _run(s2p, by_subject: dict[str, list[Path]], progress: bool, root: Path | None = None) -> dict:
    from tqdm import tqdm

    from .decision import population

    enrolled, enrol_failed, who = {}, {}, []
    for subject, paths in sorted(by_subject.items()):
        try:
            kind = "neutral"
            try:
                s2p.enroll(subject, [paths[0]], kind="neutral", pick="largest")
            except Smile2PayError as e:   # a smiling first photo is enrolled as a smile template
                if e.code != NOT_NEUTRAL:
                    raise
                kind = "smile"
                s2p.enroll(subject, [paths[0]], kind="smile", pick="largest")
            enrolled[subject] = paths[0].name
            who.append({"user_id": subject, "photo": _rel(paths[0], root) if root else str(paths[0]), "kind": kind,
                        "other_photos": len(paths) - 1})
        except Smile2PayError as e:
            enrol_failed[subject] = e.code
    subjects = sorted(enrolled)
    genuine = {"accepted": 0, "total": 0, "scores": []}
    impostor = {"accepted": 0, "total": 0, "scores": []}
    probes = [(s, p) for s in subjects for p in by_subject[s][1:]]
    for subject, path in tqdm(probes, desc="verify", disable=not progress, leave=False):
        other = subjects[(subjects.index(subject) + 1) % len(subjects)]
        for claim, bucket in ((subject, genuine), (other, impostor)):
            try:
                r = s2p.verify_identity(claim, path, pick="largest")
            except Smile2PayError as e:
                log.warning("%s: %s", path.name, e)
                bucket["total"] += 1
                continue
            bucket["total"] += 1
            bucket["accepted"] += int(r.match)
            bucket["scores"].append(round(float(r.score), 4))
    op = population.summary(s2p.identity_operating_point())
    return {
        "gallery_users": len(subjects),
        "enrolled_from": enrolled,
        "enrolled": who,
        "enrol_failed": enrol_failed,
        "identity_threshold": s2p.identity_threshold,
        "identity": op,
        "threshold_why": threshold_why(op),
        "proves": {"genuine": "another photo of an enrolled person is recognised as that person",
                   "impostor": "a photo of one enrolled person claimed as another is refused"},
        "genuine": genuine,
        "impostor": impostor,
        "summary": (f"{genuine['accepted']}/{genuine['total']} genuine photos accepted, "
                    f"{impostor['accepted']}/{impostor['total']} impostor claims accepted at cosine "
                    f">= {s2p.identity_threshold}"),
    }


def report(res: dict) -> str:
    """The demo's result as a short report for people: who was enrolled, which threshold and why,
    each decision and what it proves, and what to try next (``smile2pay demo`` without ``--json``)."""
    import textwrap

    def wrap(text: str, indent: str = "   ") -> list[str]:
        return textwrap.wrap(text, 88, initial_indent=indent, subsequent_indent=indent + "  ",
                             break_on_hyphens=False)

    def roster(people: list[dict], per_line: int) -> list[str]:
        cells = [f"{p['user_id']} <- {Path(p['photo']).name}" + ("*" if p.get("kind") == "smile" else "")
                 for p in people]
        width = max((len(c) for c in cells), default=0) + 3
        per_line = max(1, min(per_line, 83 // max(width, 1)))
        return ["     " + "".join(c.ljust(width) for c in cells[i:i + per_line]).rstrip()
                for i in range(0, len(cells), per_line)]

    g, im = res["genuine"], res["impostor"]
    people = res.get("enrolled") or [{"user_id": k, "photo": v} for k, v in res.get("enrolled_from", {}).items()]
    lines = [f"smile2pay demo: the main job on the sample photos in {res.get('data', 'SMILE2PAY_DATA')}", "",
             f"1. Identity (who is this?): {len(people)} people of samples/deepface enrolled, one photo each",
             *roster(people, 4)]
    if any(p.get("kind") == "smile" for p in people):
        lines.append("     (* a smiling photo: enrolled as a smile template; smile to pay needs a neutral one)")
    if res.get("enrol_failed"):
        lines.append("   not enrolled: " + ", ".join(f"{k} ({v})" for k, v in res["enrol_failed"].items()))
    lines += wrap("threshold: " + res.get("threshold_why", f"cosine >= {res['identity_threshold']}"))
    gs, ims = g.get("scores") or [0.0], im.get("scores") or [0.0]
    lines += [f"   {g['accepted']}/{g['total']} other photos of the same person accepted "
              f"(cosine {min(gs):.2f} to {max(gs):.2f})",
              "      proves: an enrolled person is recognised from a different photo",
              f"   {im['accepted']}/{im['total']} claims to be another enrolled person accepted "
              f"(highest cosine {max(ims):.2f})",
              "      proves: one person cannot pass as another", ""]
    stp = res.get("smile_to_pay") or {}
    if "cases" not in stp:
        lines.append(f"2. Smile to pay: skipped ({stp.get('skipped')})")
    else:
        au = stp.get("au_thresholds") or {}
        lines.append("2. Smile to pay (verify = the enrolled person + a smile that appears during the burst):")
        lines.append(f"   {len(stp.get('enrolled', []))} CK+ subjects enrolled from a neutral frame")
        lines += roster(stp.get("enrolled", []), 3)
        if stp.get("threshold_why"):
            lines += wrap("identity threshold: " + stp["threshold_why"])
        if au:
            ap = stp.get("au_thresholds_with_smile_probe") or {}
            fused = (f", {' and '.join(f'{k} >= {v:g}' for k, v in ap.items())} on the frames a burst embeds, "
                     f"fused with the identity network's smile probe") if ap else ""
            lines += wrap(f"smile (the shipped calibration): {' and '.join(f'{k} >= {v:g}' for k, v in au.items())} "
                          f"on the AU stage{fused}; present in a later frame and absent in an earlier one, above the "
                          f"user's neutral baseline")
        lines.append(f"   {'claim':6s} {'burst':31s} {'decision':31s} identity")
        for c in stp["cases"]:
            dec = APPROVED if c["approved"] else "declined: " + ", ".join(c["reasons"])
            flag = "" if c["approved"] == c["expected"] else "   <- NOT AS EXPECTED"
            score = "-" if c.get("identity_score") is None else f"{c['identity_score']:.2f}"
            lines.append(f"   {c['claim']:6s} {c['probe']:31s} {dec:31s} {score}{flag}")
        lines.append("   what each line proves:")
        for probe, proves in PROVES.items():
            lines.append(f"     {probe:31s} {proves}")
    lines.append("")
    ok = (g["accepted"] > 0 and im["accepted"] == 0
          and all(c["approved"] == c["expected"] for c in stp.get("cases", [])))
    smile = f"; smile to pay {stp['summary']}" if "summary" in stp else ""
    lines.append(f"{'OK' if ok else 'NOT AS EXPECTED'}: {g['accepted']}/{g['total']} genuine, "
                 f"{im['accepted']}/{im['total']} impostor claims accepted{smile}.")
    lines += ["", "Next, with your own photos:",
              "  smile2pay compare A.jpg B.jpg                          # same person? (no gallery)",
              "  smile2pay enroll --gallery shop --create alice alice.jpg",
              "  smile2pay verify --gallery shop alice neutral.jpg smile.jpg   # APPROVED, or why not",
              "(every score: smile2pay demo --json; HTTP: smile2pay serve, reference at /docs)"]
    return "\n".join(lines)
