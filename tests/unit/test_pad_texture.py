"""The texture features of benchmarks/pad_texture_head.py, checked by hand on small synthetic arrays."""
import numpy as np
import pytest

from smile2pay_tools.bench.pad_texture_head import _LBP_MAP, lbp_histogram, radial_spectrum


def test_uniform_lbp_map_has_58_uniform_codes_and_one_bin_for_the_rest():
    assert sorted(set(_LBP_MAP.tolist())) == list(range(59))
    assert int((_LBP_MAP < 58).sum()) == 58           # 2 constant + 56 with exactly two transitions
    assert _LBP_MAP[0b01010101] == 58 and _LBP_MAP[0] != 58 and _LBP_MAP[255] != 58


def test_lbp_of_flat_and_ramp_images_by_hand():
    flat = np.full((8, 8), 100, np.uint8)                 # every neighbour >= centre: code 255
    h = lbp_histogram(flat)
    assert h.sum() == pytest.approx(1.0) and h[_LBP_MAP[255]] == pytest.approx(1.0)
    ramp = np.tile(np.arange(8, dtype=np.uint8) * 10, (8, 1))   # grows to the right
    # neighbours at dx >= 0 are >= centre: offsets 1, 2, 3, 4, 5 (dy,dx) = (-1,0),(-1,1),(0,1),(1,1),(1,0)
    code = sum(1 << i for i in (1, 2, 3, 4, 5))
    assert lbp_histogram(ramp)[_LBP_MAP[code]] == pytest.approx(1.0)


def test_radial_spectrum_is_a_log_share_and_finds_a_fine_grating():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, (96, 96))
    s = radial_spectrum(noise)
    assert s.shape == (12,) and np.exp(s).sum() == pytest.approx(1.0, abs=1e-6)
    x = np.arange(96)
    fine = np.tile(np.cos(2 * np.pi * x / 2.5), (96, 1))   # 0.8 of Nyquist
    coarse = np.tile(np.cos(2 * np.pi * x / 24), (96, 1))  # 0.083 of Nyquist
    assert np.argmax(radial_spectrum(fine)) > 8 and np.argmax(radial_spectrum(coarse)) == 0
