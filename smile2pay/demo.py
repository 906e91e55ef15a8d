"""The main job as a newcomer sees it: enrol people from the shared sample photos, then verify.

``smile2pay demo``:

1. identity: enrols each person of ``samples/deepface`` from their first photo into a temporary
   gallery, then checks every other photo against its own identity (should pass) and against
   another enrolled person (should fail);
2. smile to pay: enrols CK+ subjects from a neutral frame and runs ``verify()`` on real bursts:
   the subject's own neutral -> smile burst (should pay), the smile frame repeated (a still photo:
   should not), another subject's smile claimed as this subject (should not).
"""
from __future__ import annotations

import csv
import logging
import tempfile
from collections import defaultdict
from pathlib import Path

from .config import data_dir as default_data_dir
from .errors import Smile2PayError

log = logging.getLogger(__name__)


def run_demo(data: str | Path | None = None, models: str | None = None, gallery: str | None = None,
             progress: bool = True) -> dict:
    from .api import Smile2Pay

    root = Path(data) if data else default_data_dir()
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
            out = _run(s2p, by_subject, progress)
        finally:
            s2p.close()
        out["smile_to_pay"] = _smile_demo(root, models, Path(tmp) / "smile-gallery", key=generate_key())
    return out


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
                              "reasons": d.reasons, "identity_score": d.identity.get("score")})
    right = sum(c["approved"] == c["expected"] for c in cases)
    return {"cases": cases, "summary": f"{right}/{len(cases)} decisions as expected"}


def _run(s2p, by_subject: dict[str, list[Path]], progress: bool) -> dict:
    from tqdm import tqdm

    enrolled, enrol_failed = {}, {}
    for subject, paths in sorted(by_subject.items()):
        try:
            try:
                s2p.enroll(subject, [paths[0]], kind="neutral", pick="largest")
            except Smile2PayError as e:   # a smiling first photo is enrolled as a smile template
                if e.code != "NOT_NEUTRAL":
                    raise
                s2p.enroll(subject, [paths[0]], kind="smile", pick="largest")
            enrolled[subject] = paths[0].name
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
    return {
        "gallery_users": len(subjects),
        "enrolled_from": enrolled,
        "enrol_failed": enrol_failed,
        "identity_threshold": s2p.identity_threshold,
        "genuine": genuine,
        "impostor": impostor,
        "summary": (f"{genuine['accepted']}/{genuine['total']} genuine photos accepted, "
                    f"{impostor['accepted']}/{impostor['total']} impostor claims accepted at cosine "
                    f">= {s2p.identity_threshold}"),
    }
