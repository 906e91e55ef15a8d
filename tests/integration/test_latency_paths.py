"""Identity only where it decides (smile2pay.vision.track): the fast path gives the same decisions as
embedding every frame, on real CK+ bursts and stream clips (640x480 camera-like frames). No timings here.
"""
import numpy as np
import pytest

from smile2pay import Smile2Pay
from smile2pay_tools.bench import clips
from smile2pay.config import QualitySettings, Settings
from smile2pay.types import Face
from smile2pay.vision import track

CK_QUALITY = QualitySettings(min_interocular_px=12, max_brightness=235, max_clipped_fraction=0.4)


@pytest.fixture(scope="module")
def ck_pipeline(models_dir):
    from smile2pay.pipeline import FacePipeline

    return FacePipeline(Settings.from_env(models=str(models_dir), quality=CK_QUALITY))


@pytest.fixture(scope="module")
def people(data_dir):
    return clips.smiling_people(data_dir, 3)


@pytest.fixture(scope="module")
def others(data_dir):
    """CK+ neutral -> peak sequences that are not a smile (the decision must decline them)."""
    rows = [r for r in clips.ck_pairs(data_dir) if r["is_smile_au6_au12"] == "0"][:2]
    return [(r["subject"], clips.read(data_dir / r["neutral_path"]), clips.read(data_dir / r["peak_path"]))
            for r in rows]


@pytest.fixture()
def s2p(tmp_path, ck_pipeline, people, others):
    from smile2pay.decision.lockout import GuardSettings

    s = Smile2Pay(tmp_path / "g", pipeline=ck_pipeline, guard_settings=GuardSettings(max_failures=1000))
    seen = set()
    for subj, neutral, _ in people + others:
        if subj not in seen:
            seen.add(subj)
            s.enroll(subj, [clips.compose(neutral)], kind="neutral")
    yield s
    s.close()


def _both(s2p, user, frames, **kw):
    s2p.identity_frames = "all"
    slow = s2p.verify(user, frames, **kw)
    s2p.identity_frames = "decision"
    fast = s2p.verify(user, frames, **kw)
    return slow, fast


def _same(slow, fast):
    assert fast.approved == slow.approved
    assert fast.reasons == slow.reasons
    assert fast.liveness.get("onset_frame") == slow.liveness.get("onset_frame")
    assert fast.liveness.get("neutral_frame") == slow.liveness.get("neutral_frame")
    assert [f.get("au_probs") for f in fast.frames] == [f.get("au_probs") for f in slow.frames]


def test_genuine_bursts_same_decision(s2p, people):
    approved = 0
    for i, (subj, neutral, peak) in enumerate(people):
        frames = clips.clip_frames([(neutral, 2), (peak, 2)], seed=i)
        slow, fast = _both(s2p, subj, frames)
        _same(slow, fast)
        approved += fast.approved
        if fast.approved:
            # the identity-checked frames (the neutral and the smile frame) score the same as the reference
            for k in (fast.liveness["neutral_frame"], fast.liveness["onset_frame"]):
                assert fast.frames[k]["identity_score"] == pytest.approx(slow.frames[k]["identity_score"], abs=1e-4)
            # a tracked frame carries the lower score of its chain's checks, never more than that
            checked = [fast.frames[k]["identity_score"] for k in (fast.liveness["neutral_frame"],
                                                                   fast.liveness["onset_frame"])]
            for f in fast.frames:
                assert f["identity_score"] >= min(checked) - 1e-9
            assert fast.identity["score"] == pytest.approx(min(checked), abs=1e-9)
            assert fast.identity["all_frames_match"]
    assert approved >= 2


def test_raw_ck_pairs_same_decision(s2p, people, data_dir):
    """The 2-frame bursts of tests/integration/test_verify.py (48 px stills, padded detection)."""
    for subj, neutral, peak in people:
        slow, fast = _both(s2p, subj, [neutral, peak])
        _same(slow, fast)


def test_impostor_and_non_smile_bursts_same_decision(s2p, people, others):
    (a, na, pa), (b, nb, pb) = people[0], people[1]
    slow, fast = _both(s2p, a, clips.clip_frames([(nb, 2), (pb, 2)], seed=3))   # b claims to be a
    _same(slow, fast)
    assert not fast.approved and "IDENTITY_MISMATCH" in fast.reasons
    for subj, neutral, peak in others:
        slow, fast = _both(s2p, subj, clips.clip_frames([(neutral, 2), (peak, 2)], seed=5))
        _same(slow, fast)
        assert not fast.approved


def test_a_face_swapped_in_mid_burst_is_embedded(s2p, people):
    """Another person's smile placed elsewhere on the canvas breaks the track: that frame is embedded
    (and declines), the same as the reference path."""
    (a, na, pa), (b, nb, pb) = people[0], people[1]
    frames = clips.clip_frames([(na, 2)], seed=7)
    other = clips.compose(pb, face_frac=0.5)
    other = np.roll(other, 150, axis=1)
    frames += [other, other.copy()]
    slow, fast = _both(s2p, a, frames)
    _same(slow, fast)
    assert not fast.approved


def _face(box):
    return Face(bbox=np.asarray(box, np.float32), det_score=0.9, landmarks=np.zeros((5, 2), np.float32),
                quality=None, image_size=(640, 480))


def test_frames_to_embed_covers_every_chain():
    a = _face([100, 100, 300, 300])
    a2 = _face([105, 102, 305, 302])
    far = _face([400, 100, 600, 300])
    faces = [a, a2, far, far, a]
    # anchors 0 and 1 cover the first chain; the far chain and the last frame have no anchor: embedded
    assert track.frames_to_embed(faces, {0, 1}) == [0, 1, 2, 3, 4]
    assert track.frames_to_embed([a, a2, a2, a], {0, 3}) == [0, 3]
    assert track.frames_to_embed([a, None, a], {0}) == [0, 2]
    scores = track.carried_scores([a, a2, a2, a], {0: 0.7, 3: 0.5})
    assert scores == [0.7, 0.5, 0.5, 0.5]


def _run_stream(s2p, user, frames, mode):
    s2p.identity_frames = mode
    with s2p.start_session(user) as sess:
        for i, fr in enumerate(frames):
            u = sess.push(fr, i / 30.0)
            if u.final:
                break
        else:
            sess.end(len(frames) / 30.0)
        return sess.decision


def test_stream_same_decision(s2p, people):
    for i, (subj, neutral, peak) in enumerate(people):
        frames = clips.clip_frames([(neutral, 10), (peak, 8)], seed=20 + i)
        slow = _run_stream(s2p, subj, frames, "all")
        fast = _run_stream(s2p, subj, frames, "decision")
        assert fast.approved == slow.approved and fast.reasons == slow.reasons
        # the frames the decision uses were identity-checked in both paths: same scores
        assert [f.get("identity_score") for f in fast.frames] == [f.get("identity_score") for f in slow.frames]
    (a, na, pa), (b, nb, pb) = people[0], people[1]
    frames = clips.clip_frames([(nb, 10), (pb, 8)], seed=30)
    slow = _run_stream(s2p, a, frames, "all")
    fast = _run_stream(s2p, a, frames, "decision")
    assert fast.approved == slow.approved is False and fast.reasons == slow.reasons
