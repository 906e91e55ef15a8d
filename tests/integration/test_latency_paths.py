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
    # the AU stage's own probabilities of every frame (under the smile probe, a frame the fast path did not embed
    # is not judged on the fused scale: its "au_probs" entry is absent there, its AU stage's are the same)
    assert [f.get("au_stage_probs", f.get("au_probs")) for f in fast.frames] == \
        [f.get("au_stage_probs", f.get("au_probs")) for f in slow.frames]


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
            # PAD reported (the default): the smile frame the payment rests on is scored, and only it
            pads = fast.liveness["pad"]["scores"]
            assert fast.liveness["pad"]["mode"] == "report"
            assert [k for k, p in enumerate(pads) if p is not None] == [fast.liveness["onset_frame"]], pads
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
    approved = 0
    for i, (subj, neutral, peak) in enumerate(people):
        frames = clips.clip_frames([(neutral, 10), (peak, 8)], seed=20 + i)
        slow = _run_stream(s2p, subj, frames, "all")
        fast = _run_stream(s2p, subj, frames, "decision")
        assert fast.approved == slow.approved and fast.reasons == slow.reasons
        if fast.approved:   # PAD reported: the smile frame (the decision's second frame) only
            approved += 1
            assert [p is not None for p in fast.liveness["pad"]["scores"]] == [False, True]
        # the frames the decision uses were identity-checked in both paths: same scores
        assert [f.get("identity_score") for f in fast.frames] == [f.get("identity_score") for f in slow.frames]
    assert approved >= 1
    (a, na, pa), (b, nb, pb) = people[0], people[1]
    frames = clips.clip_frames([(nb, 10), (pb, 8)], seed=30)
    slow = _run_stream(s2p, a, frames, "all")
    fast = _run_stream(s2p, a, frames, "decision")
    assert fast.approved == slow.approved is False and fast.reasons == slow.reasons


# -- detection in a window (Settings.window_face_px) -------------------------------------------------
def test_a_burst_detects_in_one_window_after_the_first_frame(s2p, people):
    """Every frame of a camera-like burst is detected in the first frame's window, at one scale, and the
    landmarks of the two noisy copies of one still stay within 1 % of the inter-ocular distance."""
    subj, neutral, peak = people[0]
    frames = clips.clip_frames([(neutral, 2), (peak, 2)], seed=11)
    faces = s2p._burst_faces(frames)
    passes = {f.detector_pass for f in faces}
    assert len(passes) == 1 and next(iter(passes)).startswith("window:")
    iod = float(np.linalg.norm(faces[0].landmarks[0] - faces[0].landmarks[1]))
    assert float(np.abs(faces[0].landmarks - faces[1].landmarks).max()) < 0.01 * iod
    assert all(f.au_probs and "AU12" in f.au_probs for f in faces)
    whole = s2p.pipeline.single(frames[0], embed=False, au=False)
    assert track.box_iou(whole.bbox, faces[0].bbox) > 0.8


def test_window_off_is_the_whole_frame_path(tmp_path, models_dir, people):
    from smile2pay.pipeline import FacePipeline

    pipe = FacePipeline(Settings.from_env(models=str(models_dir), quality=CK_QUALITY, window_face_px=0))
    with Smile2Pay(tmp_path / "g0", pipeline=pipe) as s:
        subj, neutral, peak = people[0]
        faces = s._burst_faces(clips.clip_frames([(neutral, 2), (peak, 2)], seed=11))
    assert all(not f.detector_pass.startswith("window") for f in faces)


def test_a_second_face_inside_the_window_is_still_refused(s2p, people):
    """A face entering the window after the first frame: the window holds two faces, so the frame goes to
    the whole-frame detection, which finds both (MULTIPLE_FACES), as with windows off."""
    (a, na, pa), (b, nb, pb) = people[0], people[1]
    first = clips.compose(na, face_frac=0.45)
    payer = s2p.pipeline.single(first, embed=False, au=False)
    window = s2p.pipeline.window_for(first, payer)
    guest = clips.compose(pb, face_frac=0.18)
    g = s2p.pipeline.single(guest, embed=False, au=False).bbox.astype(int)
    patch = guest[g[1] - 8:g[3] + 8, g[0] - 8:g[2] + 8]
    # the guest's face in the window's top-left corner, beside the payer's face, wholly inside the window
    y0, x0 = window.y1 + 4, window.x1 + 4
    assert x0 + patch.shape[1] < payer.bbox[0] and y0 + patch.shape[0] < window.y2
    second = first.copy()
    second[y0:y0 + patch.shape[0], x0:x0 + patch.shape[1]] = patch
    frames = clips.clip_frames([(first, 2), (second, 2)], seed=13)
    faces = s2p._burst_faces(frames)
    assert not isinstance(faces[0], Exception)
    assert all(getattr(f, "code", None) == "MULTIPLE_FACES" for f in faces[2:])
    d = s2p.verify(a, frames)
    assert not d.approved


def test_frames_of_another_size_are_searched_whole(s2p, people):
    """A burst whose frames change size (a client that rescales one frame) never crops a window cut for
    another frame size: those frames are detected on the whole frame, and the burst is decided as usual."""
    import cv2

    subj, neutral, peak = people[0]
    frames = clips.clip_frames([(neutral, 2), (peak, 2)], seed=17)
    frames[1] = cv2.resize(frames[1], (320, 240))
    frames[3] = cv2.resize(frames[3], (960, 720))
    faces = s2p._burst_faces(frames)
    assert faces[0].detector_pass.startswith("window:") and faces[2].detector_pass.startswith("window:")
    assert not faces[1].detector_pass.startswith("window") and not faces[3].detector_pass.startswith("window")
    d = s2p.verify(subj, frames)
    assert isinstance(d.approved, bool)
    # a window on the right of the first frame lies wholly outside a small second frame (an empty crop
    # crashed the detector before frames were checked for their size)
    first = np.roll(clips.compose(neutral, face_frac=0.35), 180, axis=1)
    window = s2p.pipeline.window_for(first, s2p.pipeline.single(first, embed=False, au=False))
    small = cv2.resize(frames[2], (96, 72))
    assert window.x1 > small.shape[1]
    faces = s2p._burst_faces([first, small, frames[2], frames[3]])
    assert faces[0].detector_pass.startswith("window:")
    assert all(not f.detector_pass.startswith("window") for f in faces[1:] if not isinstance(f, Exception))
    assert isinstance(s2p.verify(subj, [first, small, frames[2], frames[3]]).approved, bool)


# -- a burst's first look (Settings.burst_first_look) -----------------------------------------------
def test_first_look_decides_a_large_face_and_is_not_detected_twice(s2p, people):
    """A till-sized face: the 128 look finds it alone and tall enough; the burst's window is that same look,
    so frame 0 is the look's face (its landmarks are the window detection's own)."""
    subj, neutral, peak = people[0]
    frames = clips.clip_frames([(neutral, 2), (peak, 2)], seed=11)
    got = s2p.pipeline.first_look(frames[0])
    assert got is not None
    face, look = got
    assert look.size == 128 and (look.x1, look.y1, look.x2, look.y2) == (0, 0, 640, 480)
    tall = float(face.bbox[3] - face.bbox[1]) * look.size / 640.0
    assert tall >= track.SEEN_FACE_PX / track.NEAR_FACE_RATIO
    window = s2p.pipeline.window_for(frames[0], face)
    assert window == look
    again = s2p.pipeline.single_in_window(frames[0], window, face, au=False)
    assert np.array_equal(again.landmarks, face.landmarks)
    faces = s2p._burst_faces(frames)
    assert np.array_equal(faces[0].landmarks, face.landmarks)
    # the ladder's face (320) and the look's are the same face
    whole = s2p.pipeline.single(frames[0], embed=False, au=False)
    assert track.box_iou(whole.bbox, face.bbox) > 0.8


def test_first_look_leaves_small_faces_and_second_faces_to_the_ladder(s2p, people):
    (a, na, pa), (b, nb, pb) = people[0], people[1]
    # a face too small for a face half its height to be seen at 128 (nor at a second look <= 256): the ladder
    small = clips.compose(na, face_frac=0.2)
    assert s2p.pipeline.first_look(small) is None
    faces = s2p._burst_faces(clips.clip_frames([(small, 2)], seed=3))
    assert not isinstance(faces[0], Exception)
    # a mid-sized face: one second look at the size that makes it tall enough
    mid = clips.compose(na, face_frac=0.45)
    got = s2p.pipeline.first_look(mid)
    assert got is not None and got[1].size == 256      # ~200 px tall: 40 px at 128, 80 px at 256
    assert track.box_iou(got[0].bbox, s2p.pipeline.single(mid, embed=False, au=False).bbox) > 0.8
    # someone beside the user (a face as tall): the look sees two faces and leaves them to the ladder
    pair = np.concatenate([clips.compose(na, canvas=(320, 480), face_frac=0.6),
                           clips.compose(pb, canvas=(320, 480), face_frac=0.6)], axis=1)
    assert s2p.pipeline.first_look(pair) is None
    faces = s2p._burst_faces([pair, pair])
    assert all(getattr(f, "code", None) == "MULTIPLE_FACES" for f in faces)


@pytest.mark.parametrize("name", ["Martha_Stewart/Martha_Stewart_0003.jpg", "Kwon_Yang-sook/Kwon_Yang-sook_0003.jpg"])
def test_a_faint_second_face_sends_the_first_look_to_the_ladder(s2p, data_dir, name):
    """LFW photos with a second face cut by the image's edge (0.5-0.8 of the user's height): the 128 / 160 look
    scores it below the detector's threshold, the ladder's 320 above it. The look must not decide there: the
    burst declines MULTIPLE_FACES, as it did before the first look existed."""
    from smile2pay.vision.detect import Detections

    img = clips.read(data_dir / "lfw" / "lfw-deepfunneled" / name)
    ladder = s2p.pipeline.detector.detect(img)
    assert len(ladder) == 2
    h = ladder.boxes[:, 3] - ladder.boxes[:, 1]
    assert h.min() >= track.NEAR_FACE_RATIO * h.max()
    assert s2p.pipeline.first_look(img) is None
    # what the look saw at the detector's own threshold: one face (the faint one is why it steps aside)
    win = track.Window(0, 0, img.shape[1], img.shape[0], 160, img.shape[:2])
    assert isinstance(s2p.pipeline.detector.detect_window(img, win), Detections)
    assert len(s2p.pipeline.detector.detect_window(img, win)) == 1
    assert len(s2p.pipeline.detector.detect_window(img, win, threshold=track.FAINT_FACE_SCORE)) == 2
    faces = s2p._burst_faces([img, img])
    assert all(getattr(f, "code", None) == "MULTIPLE_FACES" for f in faces)


def test_first_look_off_and_its_setting(tmp_path, models_dir, people):
    from smile2pay.errors import ConfigError
    from smile2pay.pipeline import FacePipeline

    assert Settings.from_env({"SMILE2PAY_BURST_FIRST_LOOK": "0"}).burst_first_look == 0
    for bad in ({"SMILE2PAY_BURST_FIRST_LOOK": "x"}, {"SMILE2PAY_BURST_FIRST_LOOK": "100"},
                {"SMILE2PAY_BURST_FIRST_LOOK": "32"}):
        with pytest.raises(ConfigError):
            Settings.from_env(bad)
    pipe = FacePipeline(Settings.from_env(models=str(models_dir), quality=CK_QUALITY, burst_first_look=0))
    subj, neutral, peak = people[0]
    frames = clips.clip_frames([(neutral, 2), (peak, 2)], seed=11)
    assert pipe.first_look(frames[0]) is None
    with Smile2Pay(tmp_path / "g0", pipeline=pipe) as s:
        off = s._burst_faces(frames)
    assert all(f.detector_pass.startswith("window:") for f in off)
