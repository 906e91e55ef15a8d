"""Which burst frames passive PAD scores (smile2pay.api.pad_frames): hand-checked cases."""
from smile2pay.api import pad_frames


def test_enforce_scores_every_frame():
    assert pad_frames("enforce", 4, [0, 3], 3) == [0, 1, 2, 3]


def test_report_scores_the_smile_frame_only():
    assert pad_frames("report", 4, [0, 3], 3) == [3]
    assert pad_frames("report", 4, [0, 2], 2) == [2]


def test_report_without_a_smile_scores_the_last_embedded_frame():
    assert pad_frames("report", 4, [0, 1, 2, 3], None) == [3]
    assert pad_frames("report", 3, [0, 1], None) == [1]
    assert pad_frames("report", 2, [], None) == []


def test_off_scores_nothing():
    assert pad_frames("off", 4, [0, 3], 3) == []
