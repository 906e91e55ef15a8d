"""The burst's detection window (smile2pay.vision.track.Window): geometry, hand-computed cases."""
import pytest

from smile2pay.config import Settings
from smile2pay.errors import ConfigError
from smile2pay.vision import track


def test_window_is_a_square_of_two_face_sides_centred_on_the_face():
    w = track.window_around([200, 100, 300, 220], (480, 640), face_px=64)
    # face side 120 (the long side), centre (250, 160): a 240 square from (130, 40) to (370, 280)
    assert (w.x1, w.y1, w.x2, w.y2) == (130, 40, 370, 280)
    # 64 px for 120 source px: the window's 240 px at 128 (a multiple of 32)
    assert w.size == 128
    assert w.shape == (240, 240)


def test_window_is_cut_to_the_image_and_never_upscaled():
    w = track.window_around([10, 10, 110, 110], (480, 640), face_px=200)
    assert (w.x1, w.y1) == (0, 0) and (w.x2, w.y2) == (160, 160)
    assert w.size == 160                     # 200 px for a 100 px face would upscale: capped at the window's side
    big = track.window_around([100, 40, 460, 440], (480, 640), face_px=64)
    assert (big.x1, big.y1, big.x2, big.y2) == (0, 0, 640, 480)
    assert big.size == 128                   # 64 * 640 / 400 = 102.4 -> 128
    small = track.window_around([300, 200, 320, 220], (480, 640), face_px=32)
    assert small.size == track.WINDOW_MIN_SIZE


def test_window_size_is_capped():
    w = track.window_around([0, 0, 40, 40], (4000, 4000), face_px=640, max_size=320)
    assert w.size <= 320


@pytest.mark.parametrize("box", [[5, 5, 5, 5], [10, 10, 9, 30], [float("nan"), 0, 10, 10]])
def test_degenerate_boxes_give_no_window(box):
    assert track.window_around(box, (480, 640), face_px=64) is None


def test_window_off_gives_no_window():
    assert track.window_around([200, 100, 300, 220], (480, 640), face_px=0) is None


def test_contains_keeps_a_margin_inside_but_not_at_the_image_edge():
    w = track.Window(130, 40, 370, 280, 128)          # margin 0.05 * 240 = 12 px
    assert w.contains([200, 100, 300, 220], (480, 640))
    assert not w.contains([135, 100, 300, 220], (480, 640))      # 5 px from the window's left edge
    assert not w.contains([200, 100, 365, 220], (480, 640))
    edge = track.Window(0, 0, 160, 160, 160)
    assert edge.contains([0, 0, 100, 100], (480, 640))           # touching the image's edge is fine
    assert not edge.contains([0, 0, 155, 100], (480, 640))       # the window's right edge is inside the image


@pytest.mark.parametrize("value", [-1, 16, 1000, 64.0, True])
def test_settings_reject_a_bad_window_face_px(value):
    with pytest.raises(ConfigError):
        Settings(window_face_px=value).validate()


def test_settings_window_face_px_from_env():
    assert Settings.from_env({"SMILE2PAY_WINDOW_FACE_PX": "0"}).window_face_px == 0
    assert Settings.from_env({}).window_face_px == 64
    with pytest.raises(ConfigError):
        Settings.from_env({"SMILE2PAY_WINDOW_FACE_PX": "big"})


def test_a_window_fits_only_frames_of_its_size():
    w = track.window_around([200, 100, 300, 220], (480, 640), face_px=64)
    assert w.frame == (480, 640)
    assert w.fits((480, 640, 3)) and w.fits((480, 640))
    assert not w.fits((240, 320, 3))
