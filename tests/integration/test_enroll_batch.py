"""Batch enrolment (folder / manifest) on real images: report, rejections, duplicates, resume."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smile2pay.errors import RequestError
from smile2pay.gallery import Gallery
from smile2pay.gallery.batch import plan_folder, plan_manifest, run_batch

REPO = Path(__file__).resolve().parents[2]


def _folder(root: Path, layout: dict[str, list[str]]) -> Path:
    for user, imgs in layout.items():
        (root / user).mkdir(parents=True)
        for i, src in enumerate(imgs):
            os.symlink(src, root / user / (f"{i}_" + Path(src).name))   # links: no image is copied
    return root


def test_folder_batch_report_and_resume(tmp_path, pipeline, deepface_people, data_dir):
    layout = {"u_id01": deepface_people["id01"][:1], "u_id02": deepface_people["id02"][:1], "u_id04": deepface_people["id04"][:1],
              "u_noface": [str(data_dir / "samples" / "mask_blue.jpg")],
              "u_id01_again": deepface_people["id01"][1:2]}                       # same person: a duplicate
    src = _folder(tmp_path / "in", layout)
    tasks = plan_folder(src)
    assert [t.user_id for t in tasks] == sorted(layout)
    g = Gallery(tmp_path / "g", fingerprint=pipeline.model_fingerprint)
    rep = run_batch(g, tasks[:2], pipeline.settings, workers=1, progress=False)   # "interrupted" after 2 users
    assert rep["counts"]["enrolled"] + rep["counts"]["duplicates"] == 2
    rep = run_batch(g, tasks, pipeline.settings, workers=1, progress=False)
    assert rep["counts"]["skipped_already_enrolled"] >= 1
    assert sorted(g.list()) == ["u_id01", "u_id02", "u_id04"]
    assert [d["user_id"] for d in rep["duplicates"]] == ["u_id01_again"]
    assert rep["duplicates"][0]["duplicate_of"] == "u_id01"
    assert rep["rejected"] == [{"user_id": "u_noface", "images": [{"image": str(src / "u_noface" / "0_mask_blue.jpg"),
                                                                   "reasons": ["NO_FACE"]}]}]
    json.dumps(rep)  # the report is JSON
    rep = run_batch(g, tasks, pipeline.settings, workers=1, progress=False)
    assert rep["counts"]["skipped_already_enrolled"] == 3 and rep["counts"]["enrolled"] == 0


def test_manifest_plan_and_errors(tmp_path, deepface_people):
    m = tmp_path / "m.csv"
    m.write_text("user_id,image_path,kind\n"
                 f"a,{deepface_people['id03'][0]},neutral\n"
                 f"a,{deepface_people['id03'][1]},smile\n"
                 "b,rel/x.jpg,\n")
    tasks = plan_manifest(m)
    assert [(t.user_id, [k for _, k in t.images]) for t in tasks] == [("a", ["neutral", "smile"]), ("b", ["neutral"])]
    assert tasks[1].images[0][0] == str(tmp_path / "rel" / "x.jpg")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,path\nx,y\n")
    for p in (bad, tmp_path / "missing.csv"):
        with pytest.raises(RequestError):
            plan_manifest(p)
    with pytest.raises(RequestError):
        plan_folder(tmp_path / "nope")


def test_cli_enroll_batch_manifest_two_workers(tmp_path, deepface_people, data_dir):
    m = tmp_path / "m.csv"
    with open(m, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user_id", "image_path", "kind"])
        for s, kind in (("id02", "smile"), ("id03", "neutral"), ("id06", "smile"), ("id07", "smile")):
            w.writerow([s, deepface_people[s][0], kind])
        w.writerow(["missing", str(tmp_path / "gone.jpg"), "neutral"])
        w.writerow(["grin", deepface_people["id08"][0], "neutral"])       # a smiling photo is no neutral template
    report = tmp_path / "report.json"
    p = subprocess.run([sys.executable, str(REPO / "enrollment" / "enroll_batch.py"), "--gallery", str(tmp_path / "g"), "--create",
                        "--manifest", str(m), "--workers", "2", "--report", str(report), "--json"],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert out == json.loads(report.read_text())
    assert out["counts"]["enrolled"] == 4 and out["gallery_users"] == 4
    assert out["rejected"][0]["user_id"] == "missing"
    assert out["rejected"][0]["images"][0]["reasons"] == ["IMAGE_NOT_FOUND"]
    assert out["rejected"][1]["user_id"] == "grin" and "NOT_NEUTRAL" in out["rejected"][1]["images"][0]["reasons"]
    assert "enrol" in p.stderr  # tqdm progress on stderr, not stdout
