"""The detector's input shape for non-square images (smile2pay.vision.detect.fitted_input): same scale as
InsightFace's square letterbox, short side cut to the image rounded up to the largest stride. Pure arithmetic."""
import pytest

from smile2pay.vision.detect import fitted_input


@pytest.mark.parametrize("size, h, w, expected", [
    (320, 480, 640, (320, 256)),     # a 4:3 camera frame: 240 rows of image, 16 of padding (not 80)
    (320, 640, 480, (256, 320)),     # the same frame in portrait
    (320, 250, 250, (320, 320)),     # square: unchanged (LFW)
    (640, 1080, 1920, (640, 384)),   # 16:9 at the second ladder size: 360 rows -> 384
    (320, 512, 640, (320, 256)),     # exactly a multiple of the stride: no padding row at all
    (320, 10, 1000, (320, 32)),      # a strip: never below one stride
    (320, 100, 50, (160, 320)),      # portrait 1:2
])
def test_fitted_input(size, h, w, expected):
    assert fitted_input(size, h, w) == expected


def _insightface_letterbox(h, w, iw, ih):
    """(det_scale, new_width, new_height) as ``insightface.model_zoo.SCRFD.detect`` computes them."""
    im_ratio, model_ratio = h / w, ih / iw
    if im_ratio > model_ratio:
        nh = ih
        nw = int(nh / im_ratio)
    else:
        nw = iw
        nh = int(nw * im_ratio)
    return nh / h, nw, nh


def test_fitted_input_gives_the_square_letterbox():
    """For any shape the fitted input resizes the image exactly as the square input does (same scale, same
    resized size): only the padding differs."""
    for h in range(17, 1200, 37):
        for w in range(17, 1200, 41):
            for size in (320, 640):
                iw, ih = fitted_input(size, h, w)
                assert iw % 32 == 0 and ih % 32 == 0 and max(iw, ih) == size and min(iw, ih) >= 32
                assert _insightface_letterbox(h, w, iw, ih) == _insightface_letterbox(h, w, size, size), (h, w, size)
