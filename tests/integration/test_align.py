"""Alignment on a real image: checked against InsightFace's norm_crop and the detected landmarks."""
import numpy as np
import pytest

from smile2pay.vision.align import estimate_norm, norm_crop, template, transform_points


def test_norm_crop_matches_insightface(pipeline, t1_path):
    from insightface.utils import face_align

    img = pipeline.load(t1_path)
    d = pipeline.detect(img)
    assert len(d) == 6
    for lm in d.landmarks:
        ours = norm_crop(img, lm, 112, 0.0).astype(int)
        with pytest.warns(FutureWarning):  # insightface 2.1 calls a deprecated skimage API
            ref = face_align.norm_crop(img, lm).astype(int)
        assert np.abs(ours - ref).max() <= 1  # rounding of the float matrix only


def test_crop_puts_landmarks_on_template(pipeline, t1_path):
    img = pipeline.load(t1_path)
    lm = pipeline.detect(img).landmarks[0]
    for pad in (0.0, 0.15):
        m = estimate_norm(lm, 112, pad)
        mapped = transform_points(lm, m)
        # 5 real points cannot be fitted exactly by a similarity; residual must be small vs the template
        assert np.abs(mapped - template(112, pad)).max() < 6.0
