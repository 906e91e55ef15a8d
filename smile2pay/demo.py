"""The main job as a newcomer sees it: enrol people from the shared sample photos, then verify.

``smile2pay demo`` enrols each person of ``samples/deepface`` from their first photo into a
temporary gallery, then checks every other photo against its own identity (should pass) and
against another enrolled person (should fail), and reports the counts.
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
    with tempfile.TemporaryDirectory(prefix="smile2pay-demo-") as tmp:
        s2p = Smile2Pay(gallery or Path(tmp) / "gallery", models=models)
        try:
            return _run(s2p, by_subject, progress)
        finally:
            s2p.close()


def _run(s2p, by_subject: dict[str, list[Path]], progress: bool) -> dict:
    from tqdm import tqdm

    enrolled, enrol_failed = {}, {}
    for subject, paths in sorted(by_subject.items()):
        try:
            s2p.enroll(subject, [paths[0]], kind="neutral", pick="largest")
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
