"""The real pipeline on real images: detection, quality gates, identity embeddings."""
import csv

import cv2
import numpy as np
import pytest

from smile2pay.config import QualitySettings, Settings
from smile2pay.errors import ConfigError, FaceError
from smile2pay.pipeline import FacePipeline


def test_t1_six_faces_six_people(pipeline, t1_path):
    faces = pipeline.analyze(t1_path)
    assert len(faces) == 6
    for f in faces:
        assert f.det_score > 0.5
        assert f.landmarks.shape == (5, 2)
        assert f.embedding.shape == (512,) and abs(np.linalg.norm(f.embedding) - 1) < 1e-5
        x1, y1, x2, y2 = f.bbox
        assert all(x1 <= lx <= x2 and y1 <= ly <= y2 for lx, ly in f.landmarks)
    e = np.stack([f.embedding for f in faces])
    sims = e @ e.T
    off = sims[~np.eye(6, dtype=bool)]
    assert off.max() < 0.3  # six different people
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)


def _lfw_pairs(data_dir, same, n):
    with open(data_dir / "lfw" / "pairs.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["same"] == str(same)]
    return rows[:n]


def test_lfw_genuine_vs_impostor_scores(pipeline, data_dir):
    def score(row):
        a = pipeline.single(data_dir / row["path_a"], pick="center")
        b = pipeline.single(data_dir / row["path_b"], pick="center")
        return float(a.embedding @ b.embedding)

    gen = [score(r) for r in _lfw_pairs(data_dir, 1, 12)]
    imp = [score(r) for r in _lfw_pairs(data_dir, 0, 12)]
    assert np.mean(gen) > 0.45 and np.mean(imp) < 0.15
    assert min(gen) > max(imp)


def test_ckplus48_tiny_crops_are_found(pipeline, data_dir):
    """48x48 crops: the face fills the whole (tiny) frame."""
    with open(data_dir / "ckplus48" / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))[::97][:10]
    found = 0
    for r in rows:
        faces = pipeline.analyze(data_dir / r["path"], embed=False)
        if faces:
            found += 1
            assert faces[0].image_size == (48, 48)
            assert faces[0].width > 24  # the face is most of the image
    assert found == len(rows)


def test_flip_tta_changes_embedding_slightly(models_dir, t1_path, pipeline):
    flip = FacePipeline(Settings.from_env(models=str(models_dir), flip_tta=True))
    a = pipeline.analyze(t1_path)
    b = flip.analyze(t1_path)
    for fa, fb in zip(a, b):
        c = float(fa.embedding @ fb.embedding)
        assert 0.8 < c < 0.99999


def test_yunet_detector_same_faces(models_dir, t1_path, pipeline):
    y = FacePipeline(Settings.from_env(models=str(models_dir), detector="yunet"))
    fy = y.analyze(t1_path)
    fs = pipeline.analyze(t1_path)
    assert len(fy) == 6
    # same people: each SCRFD face has a YuNet face of the same identity
    for f in fs:
        assert max(float(f.embedding @ g.embedding) for g in fy) > 0.35
    # landmark order is InsightFace's (left eye has the smaller x)
    for g in fy:
        assert g.landmarks[0, 0] < g.landmarks[1, 0] and g.landmarks[3, 0] < g.landmarks[4, 0]


def test_single_face_policy(pipeline, t1_path):
    with pytest.raises(FaceError) as e:
        pipeline.single(t1_path)
    assert e.value.code == "MULTIPLE_FACES" and e.value.details["faces"] == 6
    largest = pipeline.single(t1_path, pick="largest")
    assert largest.area == max(f.area for f in pipeline.analyze(t1_path, embed=False))
    with pytest.raises(FaceError) as e:
        pipeline.single(np.full((200, 200, 3), 90, np.uint8))
    assert e.value.code == "NO_FACE"
    with pytest.raises(ValueError):
        pipeline.single(t1_path, pick="random")


@pytest.fixture(scope="module")
def one_face(data_dir):
    img = cv2.imread(str(data_dir / "lfw" / "lfw-deepfunneled" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"))
    assert img is not None
    return img


def test_clean_face_passes_gates(pipeline, one_face):
    f = pipeline.single(one_face, pick="center")
    assert f.quality.passed, f.quality.reasons


def test_blur_gate(pipeline, one_face):
    blurred = cv2.GaussianBlur(one_face, (0, 0), 6)
    f = pipeline.single(blurred, pick="center")
    assert "BLURRY" in f.quality.reasons
    assert f.quality.sharpness < pipeline.single(one_face, pick="center").quality.sharpness


def test_exposure_gates(pipeline, one_face):
    dark = (one_face.astype(np.float32) * 0.15).astype(np.uint8)
    bright = np.clip(one_face.astype(np.float32) * 2.5 + 60, 0, 255).astype(np.uint8)
    fd = pipeline.analyze(dark, embed=False)
    fb = pipeline.analyze(bright, embed=False)
    assert fd and "UNDEREXPOSED" in fd[0].quality.reasons
    assert fb and "OVEREXPOSED" in fb[0].quality.reasons


def test_small_face_and_det_score_gates(models_dir, one_face):
    strict = FacePipeline(Settings.from_env(models=str(models_dir),
                                            quality=QualitySettings(min_interocular_px=200, min_det_score=0.99)))
    f = strict.single(one_face, pick="center")
    assert "FACE_TOO_SMALL" in f.quality.reasons and "LOW_DET_SCORE" in f.quality.reasons


def test_pose_gate_on_rotated_face(pipeline, one_face):
    h, w = one_face.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 50, 1.0)
    rotated = cv2.warpAffine(one_face, m, (w, h))
    f = pipeline.single(rotated, pick="center")
    assert "EXTREME_POSE" in f.quality.reasons and abs(f.quality.roll_deg) > 30


def test_crops_on_demand(pipeline, one_face):
    f = pipeline.single(one_face, pick="center")
    ident, au = f.crop("identity"), f.crop("au")
    assert ident.shape == au.shape == (112, 112, 3)
    assert not np.array_equal(ident, au)
    d = f.to_dict()
    assert "embedding" not in d and d["has_embedding"] is True  # no biometric template in logs by default
    assert len(f.to_dict(include_embeddings=True)["embedding"]) == 512
    f.drop_image()
    with pytest.raises(ValueError):
        f.crop()


def test_invalid_settings_are_typed():
    with pytest.raises(ConfigError):
        Settings.from_env(det_sizes=(300,))
    with pytest.raises(ConfigError):
        Settings.from_env(detector="mtcnn")
    with pytest.raises(ConfigError):
        Settings.from_env(quality=QualitySettings(min_brightness=200, max_brightness=100))
    with pytest.raises(ConfigError):
        Settings.from_env(env={"SMILE2PAY_THREADS": "many"})


def test_fitted_detector_input_finds_the_same_faces(pipeline, t1_path, data_dir):
    """A non-square frame runs on the fitted input (320x256 for 640x480), not the 320 square: on real frames
    (the 6-face group photo, a CK+ face on a 640x480 camera-like canvas, the same face on a 480x640 portrait
    canvas) the same faces are found as with the square input, their landmarks are as close to a detection at
    twice the resolution (640) as the square input's are (mean error within 25 % of it), and the bare-forward
    blob has the fitted shape. The square input is what the frame padded with zeros to a square gets."""
    from smile2pay.vision.detect import fitted_input

    neutral = cv2.imread(str(sorted((data_dir / "ckplus_neutral_peak48" / "neutral").glob("*.png"))[0]))
    face = cv2.resize(neutral, (384, 384), interpolation=cv2.INTER_CUBIC)
    landscape = np.full((480, 640, 3), 90, np.uint8)
    landscape[48:432, 128:512] = face
    portrait = np.full((640, 480, 3), 90, np.uint8)
    portrait[128:512, 48:432] = face
    det = pipeline.detector

    def landmarks(d):
        return d.landmarks[np.argsort(d.boxes[:, 0])]

    for img in (cv2.imread(str(t1_path)), landscape, portrait):
        h, w = img.shape[:2]
        assert h != w
        fitted = det.detect(img, sizes=(320,))
        square = det.detect(cv2.copyMakeBorder(img, 0, max(h, w) - h, 0, max(h, w) - w, cv2.BORDER_CONSTANT,
                                               value=(0, 0, 0)), sizes=(320,))
        ref = det.detect(img, sizes=(640,))
        assert len(fitted) == len(square) == len(ref) > 0
        r = landmarks(ref)
        iod = np.linalg.norm(r[:, 0] - r[:, 1], axis=1)
        err_fit = (np.abs(landmarks(fitted) - r).max(axis=(1, 2)) / iod).mean()
        err_sq = (np.abs(landmarks(square) - r).max(axis=(1, 2)) / iod).mean()
        assert err_fit <= 1.25 * err_sq + 0.005, (err_fit, err_sq)
        assert det.forward_blob(img, 320).shape[2:] == fitted_input(320, h, w)[::-1]
