"""SCRFDDetector decodes only the anchors above the threshold: the same boxes, scores and landmarks as
insightface's own SCRFD.detect on real images at every input size the product uses (real det_500m and scrfd_500m_bnkps weights)."""
import cv2
import numpy as np
import pytest

from smile2pay.vision.detect import fitted_input
from smile2pay_tools.bench import clips


@pytest.fixture(scope="module")
def images(data_dir):
    out = [cv2.imread(str(data_dir / "samples" / "t1.jpg"))]                      # six faces
    rows = [r for r in clips.ck_pairs(data_dir)][:2]
    out += [clips.compose(clips.read(data_dir / r["peak_path"])) for r in rows]    # one face on a canvas
    lfw = sorted((data_dir / "lfw" / "lfw-deepfunneled").glob("A*/*.jpg"))[:4]
    out += [cv2.imread(str(p)) for p in lfw]
    out.append(np.full((240, 320, 3), 128, np.uint8))                              # no face
    return out


@pytest.fixture(scope="module", params=["det_500m.onnx", "scrfd_500m_bnkps.onnx"])
def detector(request, models_dir):
    """The pack's SCRFD, and one whose outputs carry a batch axis (insightface's ``batched`` branch)."""
    from smile2pay.models.runtime import create_session
    from smile2pay.vision.detect import SCRFDDetector

    path = models_dir / request.param
    det = SCRFDDetector(path, create_session(path, threads=1, name=request.param)[0])
    assert det._net.batched == (request.param == "scrfd_500m_bnkps.onnx")
    return det


def test_decode_matches_insightface_detect(detector, images):
    det = detector
    found = 0
    for img in images:
        h, w = img.shape[:2]
        for size in (128, 320, 640):
            inp = fitted_input(size, h, w)
            ref_det, ref_kps = det._net.detect(img, input_size=inp, det_thresh=det.threshold)
            ours_det, ours_kps = det._decode(img, inp)
            assert ours_det.shape == ref_det.shape
            np.testing.assert_array_equal(ours_det, ref_det)
            if len(ref_det):
                np.testing.assert_array_equal(ours_kps, ref_kps)
            found += len(ref_det)
    assert found >= 20      # t1.jpg's six faces at two sizes, the canvases, LFW
