"""Passive presentation-attack detection (smile2pay.vision.pad) on the real MiniFASNet weights and real images."""
import shutil

import numpy as np
import pytest

from smile2pay.config import Settings
from smile2pay.errors import ImageError, ModelError, RequestError
from smile2pay.models import ModelStore, get_spec
from smile2pay.models.manifest import PAD_MODELS
from smile2pay.vision.pad import PresentationAttackDetector, crop_box


@pytest.fixture(scope="module")
def pad(pipeline):
    return PresentationAttackDetector.from_pipeline(pipeline)


def test_loads_both_models_with_sha256_checks(pad, models_dir):
    assert [m.spec.name for m in pad.models] == list(PAD_MODELS)
    assert [m.scale for m in pad.models] == [2.7, 4.0]
    for name in PAD_MODELS:
        spec = get_spec(name)
        assert spec.task == "pad" and spec.input_size == (80, 80) and spec.color == "BGR"
        assert spec.mean == (0.0, 0.0, 0.0) and spec.std == (1.0, 1.0, 1.0)
        assert "Apache-2.0" in spec.licence
        r = pad.store.check(name)
        assert r.sha256_ok is True and r.actual_sha256 == spec.sha256
        assert (models_dir / spec.file).stat().st_size == spec.size


def test_missing_or_corrupt_file_is_a_typed_model_error(tmp_path, models_dir):
    s = Settings.from_env(models=str(tmp_path))
    with pytest.raises(ModelError) as e:
        PresentationAttackDetector(s, store=ModelStore([tmp_path]))
    assert e.value.code == "MODEL_MISSING" and "antispoof" in e.value.message
    (tmp_path / "antispoof").mkdir()
    for name in PAD_MODELS:
        shutil.copy(models_dir / get_spec(name).file, tmp_path / get_spec(name).file)
    bad = tmp_path / get_spec("pad_minifasnet_v1se").file
    raw = bytearray(bad.read_bytes())
    raw[-1] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelError) as e:
        PresentationAttackDetector(s, store=ModelStore([tmp_path]))
    assert e.value.code == "MODEL_CHECKSUM_MISMATCH"
    with pytest.raises(ModelError) as e:
        PresentationAttackDetector(s, store=ModelStore([tmp_path]), models=("w600k_mbf",))
    assert e.value.code == "MODEL_UNKNOWN"


def test_crop_geometry_matches_upstream_hand_computed():
    # 200x150 image, 40x40 face box near the top-right corner.
    # 2.7x: scale not capped (min(149/40, 199/40, 2.7) = 2.7): 108x108 around (170, 30) = (116, -24, 224, 84);
    #       shifted down by 24 -> (116, 0, 224, 108), then left by 25 -> (91, 0, 199, 108).
    assert crop_box((200, 150), (150, 10, 190, 50), 2.7) == (91, 0, 199, 108)
    # 4.0x: capped at 149/40 = 3.725: 149x149 -> (95.5, -44.5, 244.5, 104.5) -> (50, 0, 199, 149).
    assert crop_box((200, 150), (150, 10, 190, 50), 4.0) == (50, 0, 199, 149)
    # a box fully inside and small: no shift, no cap
    assert crop_box((400, 400), (180, 180, 220, 220), 2.7) == (146, 146, 254, 254)


def test_preprocess_is_raw_bgr_chw_of_the_upstream_crop(pad):
    import cv2

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
    img[..., 0] = 7  # blue channel constant: channel 0 of the tensor must be B
    blobs = pad.preprocess(img, [150, 10, 190, 50])
    assert [b.shape for b in blobs] == [(1, 3, 80, 80)] * 2 and blobs[0].dtype == np.float32
    want = cv2.resize(img[0:109, 91:200], (80, 80)).astype(np.float32).transpose(2, 0, 1)
    np.testing.assert_array_equal(blobs[0][0], want)
    assert np.all(blobs[0][0, 0] == 7.0) and blobs[1][0].max() > 200  # raw 0-255, no normalisation


def _lfw_faces(pipeline, data_dir, n=20):
    import csv

    rows = list(csv.DictReader(open(data_dir / "lfw" / "manifest.csv")))
    seen, out = set(), []
    for r in rows[::37]:
        if r["subject"] in seen:
            continue
        seen.add(r["subject"])
        img = pipeline.load(str(data_dir / r["path"]))
        d = pipeline.detect(img)
        if len(d):
            cy, cx = img.shape[0] / 2, img.shape[1] / 2
            j = int(np.argmin([((b[0] + b[2]) / 2 - cx) ** 2 + ((b[1] + b[3]) / 2 - cy) ** 2 for b in d.boxes]))
            out.append((img, d.boxes[j], d.landmarks[j]))
        if len(out) == n:
            break
    return out


def test_real_face_beats_its_attacked_versions(pad, pipeline, data_dir):
    from smile2pay_tools.bench.pad_attacks import attack_print, attack_screen

    faces = _lfw_faces(pipeline, data_dir)
    assert len(faces) == 20
    real, attacked = [], []
    for i, (img, box, _) in enumerate(faces):
        real.append(pad.score(img, box))
        for k, make in enumerate((attack_print, attack_screen)):
            att, exp = make(img, box, np.random.default_rng([7, k, i]))
            d = pipeline.detect(att)
            if not len(d):
                attacked.append(0.0)   # no face: the attack cannot pay
                continue
            j = int(np.argmax([min(b[2], exp[2]) - max(b[0], exp[0]) for b in d.boxes]))
            attacked.append(pad.score(att, d.boxes[j]))
    real, attacked = np.array(real), np.array(attacked).reshape(-1, 2)
    assert (real >= 0.5).sum() >= 14, real.round(3)
    assert (attacked >= 0.5).sum() <= 8, attacked.round(3)
    assert (real[:, None] > attacked).mean() >= 0.8


def test_scores_api_shapes_and_values(pad, pipeline, t1_path):
    img = pipeline.load(t1_path)
    d = pipeline.detect(img)
    p = pad.probabilities(img, d.boxes)
    assert p.shape == (len(d), 3) and np.allclose(p.sum(1), 1.0, atol=1e-5)
    s = pad.scores(img, d.boxes)
    assert s.shape == (len(d),) and np.allclose(s, p[:, 1])
    assert pad.score(img, d.boxes[0]) == pytest.approx(float(s[0]), abs=1e-6)
    assert pad.score(img, list(d.boxes[0]) + [0.9]) == pytest.approx(float(s[0]), abs=1e-6)  # detector row
    assert pad.scores(img, np.zeros((0, 4))).shape == (0,)
    assert pad.upstream_real(p).dtype == bool
    assert isinstance(pad.is_bona_fide(img, d.boxes[0]), bool)


@pytest.mark.parametrize("image, box, err, code", [
    ("not an image", [10, 10, 50, 50], ImageError, "IMAGE_BAD_TYPE"),
    (np.zeros((64, 64, 3), np.float32), [10, 10, 50, 50], ImageError, "IMAGE_BAD_ARRAY"),
    (np.zeros((0, 64, 3), np.uint8), [10, 10, 50, 50], ImageError, "IMAGE_EMPTY"),
    (np.zeros((64, 64, 2), np.uint8), [10, 10, 50, 50], ImageError, "IMAGE_BAD_ARRAY"),
    (np.zeros((64, 64, 3), np.uint8), [10, 10, 50], RequestError, "REQUEST_INVALID"),
    (np.zeros((64, 64, 3), np.uint8), [10, 10, float("nan"), 50], RequestError, "REQUEST_INVALID"),
    (np.zeros((64, 64, 3), np.uint8), [50, 10, 10, 50], RequestError, "REQUEST_INVALID"),
    (np.zeros((64, 64, 3), np.uint8), [100, 100, 150, 150], RequestError, "REQUEST_INVALID"),
    (np.zeros((64, 64, 3), np.uint8), "abcd", RequestError, "REQUEST_INVALID"),
    (np.zeros((64, 64, 3), np.uint8), [[1, 1, 20, 20], [5, 5, 30, 30]], RequestError, "REQUEST_INVALID"),
    (np.zeros((64, 64, 3), np.uint8), None, RequestError, "REQUEST_INVALID"),
])
def test_bad_inputs_are_typed_errors(pad, image, box, err, code):
    with pytest.raises(err) as e:
        pad.score(image, box)
    assert e.value.code == code


def test_threshold_must_be_a_probability(pipeline):
    with pytest.raises(RequestError):
        PresentationAttackDetector.from_pipeline(pipeline, threshold=1.5)


def test_continuous_tone_species_and_live_frames_show_the_victim_where_expected(pipeline, data_dir):
    """The two species without periodic artefacts (photo-lab print, high-DPI screen) and the simulated live
    capture: 640x480 BGR frames in which the detector finds the victim's face where the generator put it."""
    from smile2pay.vision.track import box_iou
    from smile2pay_tools.bench.pad_attacks import SCENE, live_frame, make_attack

    faces = _lfw_faces(pipeline, data_dir, n=8)
    hits = {"print_photo": 0, "screen_hidpi": 0, "live": 0}
    for i, (img, box, _) in enumerate(faces):
        for k, sp in enumerate(("print_photo", "screen_hidpi")):
            att, exp = make_attack(sp, img, box, np.random.default_rng([11, k, i]))
            assert att.shape == (SCENE[1], SCENE[0], 3) and att.dtype == np.uint8
            d = pipeline.detect(att)
            hits[sp] += bool(len(d)) and max(box_iou(b, exp) for b in d.boxes) >= 0.3
        fr = live_frame(img, np.random.default_rng([12, i]))
        assert fr.shape == (SCENE[1], SCENE[0], 3) and fr.dtype == np.uint8
        hits["live"] += bool(len(pipeline.detect(fr)))
    assert all(v >= 7 for v in hits.values()), hits
    with pytest.raises(ValueError):
        make_attack("cutout_mask", faces[0][0], faces[0][1], np.random.default_rng(0))


def test_model_probabilities_are_what_probabilities_average(pad, pipeline, t1_path):
    img = pipeline.load(t1_path)
    d = pipeline.detect(img)
    per = pad.model_probabilities(img, d.boxes)
    assert per.shape == (len(d), len(pad.models), 3) and np.allclose(per.sum(axis=2), 1.0, atol=1e-9)
    assert np.allclose(pad.probabilities(img, d.boxes), per.mean(axis=1), atol=1e-6)
    assert pad.model_probabilities(img, np.zeros((0, 4))).shape == (0, len(pad.models), 3)
