"""Smile2Pay facade and gallery CLI on the real models and real images (deepface sample photos)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from smile2pay.errors import FaceError, GalleryError, ImageError
from smile2pay.gallery import DuplicateIdentityError


@pytest.fixture()
def s2p(tmp_path, pipeline):
    from smile2pay import Smile2Pay

    with Smile2Pay(tmp_path / "gallery", pipeline=pipeline) as s:
        yield s


def test_enroll_identify_verify_remove(s2p, deepface_people, pipeline):
    res = s2p.enroll("alice", [deepface_people["id00"][1], deepface_people["id00"][0]], kind=["neutral", "smile"])
    assert res.created and len(res.template_ids) == 2 and res.rejected == []
    s2p.enroll("bob", deepface_people["id03"][0])
    s2p.enroll("carol", deepface_people["id05"][0], kind="smile")     # a smiling photo: not a neutral template
    assert s2p.count() == 3 and s2p.list() == ["alice", "bob", "carol"]
    top = s2p.identify(deepface_people["id00"][3], k=3)
    assert top[0].user_id == "alice" and top[0].match and not top[1].match
    assert s2p.identify(deepface_people["id03"][1], k=1)[0].user_id == "bob"
    assert s2p.verify_identity("alice", deepface_people["id00"][4]).match
    assert not s2p.verify_identity("alice", deepface_people["id03"][1]).match
    # a Face object passes through (no second detection); a BGR array works too
    face = pipeline.single(deepface_people["id05"][1])
    assert s2p.verify_identity("carol", face).match
    assert s2p.verify_identity("carol", cv2.imread(deepface_people["id05"][1])).score == pytest.approx(
        s2p.verify_identity("carol", face).score, abs=1e-5)
    assert [t.kind for t in s2p.get("alice").templates] == ["neutral", "smile"]
    assert s2p.remove("alice") == 2
    with pytest.raises(GalleryError) as e:
        s2p.get("alice")
    assert e.value.code == "GALLERY_USER_NOT_FOUND"
    assert all(m.user_id != "alice" for m in s2p.identify(deepface_people["id00"][3], k=5))


def test_enrolment_rejections_and_duplicates(s2p, deepface_people, data_dir, t1_path):
    with pytest.raises(FaceError) as e:                     # a smiling photo is no neutral template
        s2p.enroll("alice", deepface_people["id00"][0])
    assert e.value.code == "NOT_NEUTRAL" and "alice" not in s2p.gallery
    s2p.enroll("alice", deepface_people["id00"][1])
    with pytest.raises(DuplicateIdentityError) as e:
        s2p.enroll("mallory", deepface_people["id00"][0], kind="smile")
    assert e.value.details["duplicate_of"] == "alice" and "mallory" not in s2p.gallery
    with pytest.raises(FaceError) as e:
        s2p.enroll("group", str(t1_path))
    assert e.value.code == "MULTIPLE_FACES"
    with pytest.raises(FaceError) as e:
        s2p.enroll("nobody", str(data_dir / "samples" / "mask_black.jpg"))
    assert e.value.code == "NO_FACE"
    with pytest.raises(ImageError):
        s2p.enroll("ghost", str(data_dir / "no_such_file.jpg"))
    # a dark copy of a real photo fails the exposure gate; a good image alongside is still enrolled
    dark = (cv2.imread(deepface_people["id03"][0]).astype(np.float32) * 0.12).astype(np.uint8)
    res = s2p.enroll("bob", [dark, deepface_people["id03"][1]])
    assert len(res.template_ids) == 1 and len(res.rejected) == 1
    assert res.rejected[0]["code"] in ("LOW_QUALITY", "NO_FACE")
    with pytest.raises(FaceError) as e:
        s2p.enroll("dave", [dark])
    assert e.value.code in ("LOW_QUALITY", "NO_FACE") and e.value.details["rejected"]
    # re-enrolment is an explicit choice
    with pytest.raises(GalleryError) as e:
        s2p.enroll("alice", deepface_people["id00"][2])
    assert e.value.code == "GALLERY_USER_EXISTS"
    assert len(s2p.enroll("alice", deepface_people["id00"][2], kind="smile", mode="append").template_ids) == 1
    assert len(s2p.get("alice").templates) == 2


def test_facade_rejects_other_model_gallery(tmp_path, pipeline):
    from smile2pay import Smile2Pay
    from smile2pay.gallery import Gallery

    Gallery(tmp_path / "g", fingerprint="sface:0000").close()
    with pytest.raises(GalleryError) as e:
        Smile2Pay(tmp_path / "g", pipeline=pipeline)
    assert e.value.code == "GALLERY_MODEL_MISMATCH"


def _cli(*args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "smile2pay.cli", *args], capture_output=True, text=True, env=e,
                       timeout=300)
    return p.returncode, json.loads(p.stdout), p.stderr


def test_cli_gallery_commands(tmp_path, deepface_people):
    g = str(tmp_path / "g")
    key = tmp_path / "key"
    key.write_text("ab" * 32)
    env = {"SMILE2PAY_GALLERY_KEY_FILE": str(key)}
    code, out, err = _cli("enroll", "--gallery", g, "alice", deepface_people["id00"][0], deepface_people["id00"][1],
                          "--kind", "neutral", "--kind", "smile", "--json", env=env)
    assert code == 2 and out["error"]["code"] == "GALLERY_NOT_FOUND"          # a typo'd path is not created
    assert not (tmp_path / "g").exists()
    code, out, err = _cli("enroll", "--gallery", g, "alice", deepface_people["id00"][1], deepface_people["id00"][0],
                          "--kind", "neutral", "--kind", "smile", "--create", "--json", env=env)
    assert code == 0, err
    assert out["enrolled"]["user_id"] == "alice" and out["enrolled"]["kinds"] == ["neutral", "smile"]
    code, out, _ = _cli("identify", "--gallery", g, deepface_people["id00"][3], "--json", env=env)
    assert code == 0 and out["identified"] == "alice"
    code, out, _ = _cli("identify", "--gallery", g, deepface_people["id03"][0], "--json", env=env)
    assert code == 1 and out["identified"] is None            # open set: not enrolled
    code, out, _ = _cli("enroll", "--gallery", g, "mallory", deepface_people["id00"][2], "--json", env=env)
    assert code == 1 and out["error"]["code"] == "GALLERY_DUPLICATE"
    code, out, _ = _cli("enroll", "--gallery", g, "x", str(tmp_path / "missing.jpg"), "--json", env=env)
    assert code == 2 and out["error"]["code"] == "IMAGE_NOT_FOUND"
    code, out, _ = _cli("identify", "--gallery", g, deepface_people["id00"][3], "--json",
                        env={"SMILE2PAY_GALLERY_KEY_FILE": "", "SMILE2PAY_GALLERY_KEY": "cd" * 32})
    assert code == 2 and out["error"]["code"] == "GALLERY_WRONG_KEY"
    code, out, _ = _cli("gallery-rotate-key", "--gallery", g, "--generate-new-key", str(tmp_path / "k2"),
                        "--json", env=env)
    assert code == 0 and out["rotated"] == 2
    env2 = {"SMILE2PAY_GALLERY_KEY_FILE": str(tmp_path / "k2")}
    code, out, _ = _cli("gallery", "--gallery", g, "info", "--json", env=env2)
    assert code == 0 and out["users"] == 1 and out["encrypted"] and out["model"].startswith("w600k_mbf:")
    assert out["identity"]["source"] == "shipped" and out["identity"]["users"] == 1   # one user: not lowered
    code, out, _ = _cli("remove", "--gallery", g, "alice", "--json", env=env2)
    assert code == 0 and out["templates"] == 2 and out["gallery_users"] == 0
    code, out, _ = _cli("remove", "--gallery", g, "alice", "--json", env=env2)
    assert code == 2 and out["error"]["code"] == "GALLERY_USER_NOT_FOUND"
    code, out, _ = _cli("gallery", "--gallery", str(tmp_path / "nope"), "info", "--json")
    assert code == 2 and out["error"]["code"] == "GALLERY_NOT_FOUND"
