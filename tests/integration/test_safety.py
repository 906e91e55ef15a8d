"""Safe by default (issue 16): encrypted galleries without configuration, erasure that leaves nothing
outside the audit, a lockout that counts concurrent attempts, enrolment in one transaction, missing
galleries not silently created. Real faces (CK+ 48x48 neutral -> peak frames) and real weights."""
import csv
import json
import os
import stat
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from smile2pay import Smile2Pay
from smile2pay.config import QualitySettings, Settings
from smile2pay.decision.lockout import GuardSettings
from smile2pay.errors import GalleryError
from smile2pay.gallery.guard import Guard

CK_QUALITY = QualitySettings(min_interocular_px=12, max_brightness=235, max_clipped_fraction=0.4)


@pytest.fixture(autouse=True)
def _no_key_env(monkeypatch):
    for k in ("SMILE2PAY_GALLERY_KEY", "SMILE2PAY_GALLERY_KEY_FILE", "SMILE2PAY_GALLERY_PLAINTEXT"):
        monkeypatch.delenv(k, raising=False)


@pytest.fixture(scope="module")
def ck(data_dir):
    from smile2pay_tools.bench.fleet import ck_smile_pairs

    return [{"subject": r["subject"], "neutral": str(data_dir / r["neutral_path"]),
             "peak": str(data_dir / r["peak_path"])} for r in ck_smile_pairs(data_dir)]


@pytest.fixture(scope="module")
def ck_pipeline(models_dir):
    from smile2pay.pipeline import FacePipeline

    return FacePipeline(Settings.from_env(models=str(models_dir), quality=CK_QUALITY))


def _scan(folder: Path, needles: list[bytes], skip=("audit.jsonl",)) -> list[str]:
    hits = []
    for p in Path(folder).rglob("*"):
        if p.is_file() and p.name not in skip:
            blob = p.read_bytes()
            hits += [f"{p.name}:{i}" for i, n in enumerate(needles) if n in blob]
    return hits


def _needles(vec) -> list[bytes]:
    b = np.asarray(vec, "<f4").tobytes()
    return [b] + [b[i:i + 32] for i in range(0, len(b), 256)]


def _enrol_one(s2p, people):
    for r in people:
        try:
            s2p.enroll(r["subject"], [r["neutral"]], kind="neutral")
            return r
        except Exception:   # noqa: BLE001 - a 48x48 frame that fails a gate: take the next subject
            continue
    raise AssertionError("no CK+ subject could be enrolled")


# -- encryption by default ---------------------------------------------------------------------------
def test_default_gallery_is_encrypted_with_a_0600_key_beside_it(tmp_path, ck, ck_pipeline):
    g = tmp_path / "g"
    with Smile2Pay(g, pipeline=ck_pipeline) as s2p:
        r = _enrol_one(s2p, ck)
        vec = s2p.gallery.templates(r["subject"])[2][0]
        assert s2p.gallery.encrypted and s2p.gallery.key_source == str(g / "gallery.key")
        s2p.gallery.compact()
    assert _scan(g, _needles(vec)) == []                       # 0 bytes of the embedding anywhere
    assert stat.S_IMODE(os.stat(g / "gallery.key").st_mode) == 0o600
    with Smile2Pay(g, pipeline=ck_pipeline) as s2p:             # reopens with the same key file
        assert s2p.verify_identity(r["subject"], r["neutral"]).match


def test_plaintext_only_by_name(tmp_path, ck, ck_pipeline):
    g = tmp_path / "plain"
    with Smile2Pay(g, pipeline=ck_pipeline, plaintext=True) as s2p:
        r = _enrol_one(s2p, ck)
        vec = s2p.gallery.templates(r["subject"])[2][0]
        assert not s2p.gallery.encrypted
    assert _scan(g, _needles(vec)) and not (g / "gallery.key").exists()   # positive control of the scan
    with pytest.raises(GalleryError) as e:
        Smile2Pay(g, pipeline=ck_pipeline)                      # never opened as plaintext by accident
    assert e.value.code == "GALLERY_PLAINTEXT"


def test_missing_gallery_is_not_created_unless_asked(tmp_path, ck_pipeline, data_dir):
    with pytest.raises(GalleryError) as e:
        Smile2Pay(tmp_path / "typo", pipeline=ck_pipeline, create=False)
    assert e.value.code == "GALLERY_NOT_FOUND" and not (tmp_path / "typo").exists()
    env = {**os.environ, "SMILE2PAY_MODELS": str(ck_pipeline.settings.models or os.environ.get("SMILE2PAY_MODELS", ""))}
    img = str(data_dir / "samples" / "t1.jpg")
    p = subprocess.run([sys.executable, "-m", "smile2pay.cli", "verify", "--gallery", str(tmp_path / "typo2"),
                        "alice", img, img, "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2 and json.loads(p.stdout)["error"]["code"] == "GALLERY_NOT_FOUND"
    assert not (tmp_path / "typo2").exists()


# -- erasure -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ["api", "cli"])
def test_erasure_leaves_nothing_outside_the_audit(tmp_path, ck, ck_pipeline, entry, models_dir):
    g = tmp_path / "g"
    uid = "victim-" + uuid.uuid4().hex
    with Smile2Pay(g, pipeline=ck_pipeline, guard_settings=GuardSettings(max_failures=10)) as s2p:
        for r in ck:
            try:
                s2p.enroll(uid, [r["neutral"]], kind="neutral")
                break
            except Exception:   # noqa: BLE001
                continue
        vec = s2p.gallery.templates(uid)[2][0]
        other = ck[-1]
        for _ in range(2):                                      # failures: lockout rows hold the id
            assert not s2p.verify(uid, [other["neutral"], other["peak"]]).approved
        if entry == "api":
            s2p.remove(uid)
    if entry == "cli":
        p = subprocess.run([sys.executable, "-m", "smile2pay.cli", "remove", "--gallery", str(g), uid, "--json"],
                           capture_output=True, text=True, env={**os.environ, "SMILE2PAY_MODELS": str(models_dir)},
                           timeout=300)
        assert p.returncode == 0, p.stderr
    needles = _needles(vec) + [uid.encode()]
    assert _scan(g, needles) == []                              # templates, baseline, lockout rows, WALs
    assert any(uid in line for line in (g / "audit.jsonl").read_text().splitlines())   # the audit keeps the id


# -- lockout -----------------------------------------------------------------------------------------
def test_reserve_admits_at_most_max_failures_concurrent_attempts(tmp_path):
    guard = Guard(tmp_path, GuardSettings(max_failures=5))
    got, barrier = [], threading.Barrier(16)

    def attempt():
        barrier.wait()
        got.append(guard.reserve("u1"))

    ts = [threading.Thread(target=attempt) for _ in range(16)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert sum(1 for end, rid in got if rid is not None) == 5 and sum(1 for end, _ in got if end) == 11
    guard.record("u1", True)                                    # an approval clears the reservations
    assert guard.locked_until("u1") is None


def test_concurrent_impostor_verifies_are_capped(tmp_path, ck, ck_pipeline):
    with Smile2Pay(tmp_path / "g", pipeline=ck_pipeline, guard_settings=GuardSettings(max_failures=5)) as s2p:
        victim = _enrol_one(s2p, ck)
        attacker = ck[-1]
        decisions, barrier = [], threading.Barrier(16)

        def attack():
            barrier.wait()
            decisions.append(s2p.verify(victim["subject"], [attacker["neutral"], attacker["peak"]]))

        ts = [threading.Thread(target=attack) for _ in range(16)]
        [t.start() for t in ts]
        [t.join() for t in ts]
    evaluated = [d for d in decisions if "LOCKED_OUT" not in d.reasons]
    assert len(decisions) == 16 and len(evaluated) <= 5 and not any(d.approved for d in decisions)


def test_unlock_lifts_a_lockout(tmp_path, ck, ck_pipeline):
    with Smile2Pay(tmp_path / "g", pipeline=ck_pipeline, guard_settings=GuardSettings(max_failures=2)) as s2p:
        victim = _enrol_one(s2p, ck)
        attacker = ck[-1]
        for _ in range(2):
            s2p.verify(victim["subject"], [attacker["neutral"], attacker["peak"]])
        assert s2p.verify(victim["subject"], [victim["neutral"], victim["peak"]]).reasons == ["LOCKED_OUT"]
        assert s2p.unlock(victim["subject"]) == {"user_id": victim["subject"], "was_locked": True}
        assert "LOCKED_OUT" not in s2p.verify(victim["subject"], [victim["neutral"], victim["peak"]]).reasons


# -- enrolment ---------------------------------------------------------------------------------------
def test_template_and_baseline_commit_together(tmp_path, ck, ck_pipeline):
    """A failure while writing the baseline must leave no template either (one transaction)."""
    with Smile2Pay(tmp_path / "g", pipeline=ck_pipeline) as s2p:
        r = ck[0]
        s2p.gallery._baseline_blob = lambda *a, **k: (_ for _ in ()).throw(OSError("disk full"))  # noqa: E731
        with pytest.raises(OSError):
            s2p.enroll(r["subject"], [r["neutral"]], kind="neutral")
        del s2p.gallery._baseline_blob
        assert r["subject"] not in s2p.gallery and s2p.count() == 0
        s2p.enroll(r["subject"], [r["neutral"]], kind="neutral")
        assert s2p.gallery.au_baseline(r["subject"]) is not None


def test_smiling_photo_is_not_a_neutral_template(tmp_path, ck, ck_pipeline):
    with Smile2Pay(tmp_path / "g", pipeline=ck_pipeline) as s2p:
        peaks = [r for r in ck if s2p.shows_smile(ck_pipeline.single(r["peak"], pick="error").au_probs)]
        assert peaks, "some CK+ smile peaks must show the pattern"
        with pytest.raises(Exception) as e:
            s2p.enroll(peaks[0]["subject"], [peaks[0]["peak"]], kind="neutral")
        assert getattr(e.value, "code", None) == "NOT_NEUTRAL"
        s2p.enroll(peaks[0]["subject"], [peaks[0]["peak"]], kind="smile")      # as a smile template: fine


def test_enroll_batch_stores_baselines(tmp_path, ck, models_dir, data_dir):
    man = tmp_path / "m.csv"
    with open(man, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user_id", "image_path", "kind"])
        for r in ck[:3]:
            w.writerow([r["subject"], r["neutral"], "neutral"])
    env = {**os.environ, "SMILE2PAY_MODELS": str(models_dir), "SMILE2PAY_MIN_INTEROCULAR_PX": "12"}
    g = tmp_path / "g"
    p = subprocess.run([sys.executable, "-m", "smile2pay.cli", "enroll-batch", "--gallery", str(g), "--create",
                        "--manifest", str(man), "--workers", "1", "--no-quality-gate", "--no-progress", "--json"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["counts"]["enrolled"] >= 1
    from smile2pay.gallery import Gallery

    with Gallery(g) as gal:
        for e in rep["enrolled"]:
            assert gal.au_baseline(e["user_id"]) is not None


def test_rotation_keeps_the_generated_key_file_in_step(tmp_path, ck, ck_pipeline):
    from smile2pay.gallery import generate_key

    g = tmp_path / "g"
    with Smile2Pay(g, pipeline=ck_pipeline) as s2p:
        r = _enrol_one(s2p, ck)
        new = generate_key()
        assert s2p.rotate_key(new) == 1
    assert (g / "gallery.key").read_text().strip() == new.hex()
    assert stat.S_IMODE(os.stat(g / "gallery.key").st_mode) == 0o600 and not (g / "gallery.tmp").exists()
    with Smile2Pay(g, pipeline=ck_pipeline) as s2p:              # reopens with the rotated key
        assert s2p.verify_identity(r["subject"], r["neutral"]).match
        s2p.rotate_key(None)                                      # decrypt: the key file goes
    assert not (g / "gallery.key").exists()
    with pytest.raises(GalleryError) as e:
        Smile2Pay(g, pipeline=ck_pipeline)
    assert e.value.code == "GALLERY_PLAINTEXT"
