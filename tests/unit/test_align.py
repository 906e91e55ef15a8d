"""Alignment geometry without weights or images: checked against scikit-image and hand-made cases."""
import numpy as np
import pytest

from smile2pay.vision.align import (ARCFACE_DST, estimate_norm, pose_from_landmarks, similarity_transform, template,
                                    transform_points)


def test_similarity_matches_skimage():
    from skimage.transform import SimilarityTransform

    rng = np.random.default_rng(0)
    for _ in range(20):
        src = rng.uniform(0, 500, size=(5, 2))
        dst = rng.uniform(0, 112, size=(5, 2))
        ours = similarity_transform(src, dst)
        ref = SimilarityTransform.from_estimate(src, dst).params[:2]
        np.testing.assert_allclose(ours, ref, atol=1e-8)


def test_similarity_recovers_known_transform():
    angle, scale, t = np.radians(17.0), 2.5, np.array([10.0, -4.0])
    r = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_DST
    dst = src @ r.T + t
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], r, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)
    np.testing.assert_allclose(transform_points(src, m), dst, atol=1e-9)


def test_template_padding_shrinks_towards_centre():
    t0 = template(112, 0.0)
    np.testing.assert_allclose(t0, ARCFACE_DST)
    t15 = template(112, 0.15)
    # a pad of 0.15 adds 15% of the crop on each side: points move toward the centre by 1/1.3
    np.testing.assert_allclose(t15, (ARCFACE_DST / 112 + 0.15) / 1.3 * 112)
    spread0 = np.ptp(t0[:, 0])
    assert np.ptp(t15[:, 0]) == pytest.approx(spread0 / 1.3)
    np.testing.assert_allclose(template(224, 0.0), ARCFACE_DST * 2)


def test_bad_landmarks_raise():
    with pytest.raises(ValueError):
        estimate_norm(np.zeros((4, 2)))
    with pytest.raises(ValueError):
        similarity_transform(np.zeros((5, 2)), ARCFACE_DST)


def test_pose_frontal_and_turned():
    yaw, pitch, roll, iod = pose_from_landmarks(ARCFACE_DST)
    assert abs(yaw) < 0.02 and abs(pitch) < 1e-6 and abs(roll) < 0.5
    assert iod == pytest.approx(np.hypot(*(ARCFACE_DST[1] - ARCFACE_DST[0])))
    turned = ARCFACE_DST.copy()
    turned[2, 0] += 20  # nose moved far right: a strong yaw
    assert pose_from_landmarks(turned)[0] > 0.45
    c, s = np.cos(np.radians(40)), np.sin(np.radians(40))
    rolled = (ARCFACE_DST - 56) @ np.array([[c, -s], [s, c]]).T + 56
    y2, p2, r2, _ = pose_from_landmarks(rolled)
    assert r2 == pytest.approx(40 + roll, abs=0.01)
    assert abs(y2 - yaw) < 1e-6 and abs(p2 - pitch) < 1e-6  # yaw/pitch are roll-invariant


def test_similarity_matches_umeyama_svd_with_reflected_points():
    """The closed form equals the SVD form of Umeyama, also where the best fit would be a reflection
    (det(cov) < 0: both keep a proper rotation)."""
    def umeyama(src, dst):
        n = len(src)
        mu_s, mu_d = src.mean(0), dst.mean(0)
        s_c, d_c = src - mu_s, dst - mu_d
        cov = d_c.T @ s_c / n
        u, sig, vt = np.linalg.svd(cov)
        d = np.ones(2)
        if np.linalg.det(cov) < 0:
            d[1] = -1.0
        r = u @ np.diag(d) @ vt
        scale = (sig * d).sum() / ((s_c ** 2).sum() / n)
        m = np.zeros((2, 3))
        m[:, :2] = scale * r
        m[:, 2] = mu_d - scale * r @ mu_s
        return m

    rng = np.random.default_rng(1)
    reflected = 0
    for _ in range(200):
        src = rng.uniform(-50, 50, size=(5, 2))
        dst = src[:, ::-1] * rng.uniform(0.5, 2) + rng.normal(0, 3, size=(5, 2))   # mostly a mirror image
        d_c, s_c = dst - dst.mean(0), src - src.mean(0)
        reflected += np.linalg.det(d_c.T @ s_c) < 0
        np.testing.assert_allclose(similarity_transform(src, dst), umeyama(src, dst), atol=1e-9)
    assert reflected > 100
