"""The calibration file's pad section is read strictly, and the BPCER threshold rule by hand."""
import json

import pytest

from smile2pay.decision.policy import CALIBRATION_DIR, Policy, parse_pad_section, write_calibration
from smile2pay.errors import ConfigError, RequestError
from smile2pay.vision.pad import threshold_at_bpcer


def test_threshold_at_bpcer_by_hand():
    s = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 1.0]    # sorted: 0.1 .. 1.0
    assert threshold_at_bpcer(s, 0.05) == 0.1                 # floor(0.5) = 0: nothing may fall below
    assert threshold_at_bpcer(s, 0.10) == 0.2                 # one of ten below 0.2
    assert threshold_at_bpcer(s, 0.25) == 0.3                 # floor(2.5) = 2 below
    with pytest.raises(ValueError):
        threshold_at_bpcer([], 0.05)


def test_pad_section_values_and_defaults():
    assert parse_pad_section(None) == {} and parse_pad_section({}) == {}
    assert parse_pad_section({"mode": "enforce", "threshold": 0.2, "min_face_px": 80, "note": "x"}) == \
        {"pad_mode": "enforce", "pad_threshold": 0.2, "pad_min_face_px": 80.0}
    pol = Policy.from_calibration(CALIBRATION_DIR / "mobile.json")
    assert pol.pad_mode == "report" and pol.pad_threshold == pytest.approx(0.0938) and pol.pad_min_face_px == 64


@pytest.mark.parametrize("pad", [
    [], {"mode": "enfroce"}, {"mode": None}, {"threshold": 1.5}, {"threshold": "0.2"}, {"threshold": True},
    {"threshold": float("nan")}, {"min_face_px": 0}, {"min_face_px": -5}])
def test_malformed_pad_section_is_calibration_invalid(pad, tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_pad_section(pad, "x.json")
    assert e.value.code == "CALIBRATION_INVALID"
    cal = json.loads((CALIBRATION_DIR / "mobile.json").read_text())
    cal["pad"] = pad
    f = tmp_path / "c.json"
    f.write_text(json.dumps(cal))
    with pytest.raises(ConfigError) as e2:
        Policy.from_calibration(f)
    assert e2.value.code == "CALIBRATION_INVALID"


def test_write_calibration_to_an_unwritable_path_is_a_typed_error(tmp_path):
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("x")
    for bad in (tmp_path / "a_folder", tmp_path / "a_file" / "below_a_file.json"):
        with pytest.raises(RequestError) as e:
            write_calibration(bad, {"format": "x"})
        assert e.value.code == "REQUEST_INVALID" and str(bad) in str(e.value)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a_file", "a_folder"]     # no .tmp left
    ok = write_calibration(tmp_path / "new" / "cal.json", {"format": "x"})
    assert json.loads(ok.read_text()) == {"format": "x"}


def test_a_file_without_continuity_limits_is_loaded_with_a_warning(tmp_path, caplog):
    cal = json.loads((CALIBRATION_DIR / "mobile.json").read_text())
    with caplog.at_level("WARNING", logger="smile2pay.policy"):
        Policy.from_calibration(CALIBRATION_DIR / "mobile.json")
    assert not [r for r in caplog.records if "capture_continuity" in r.getMessage()]
    del cal["capture_continuity"]
    f = tmp_path / "old.json"
    f.write_text(json.dumps(cal))
    with caplog.at_level("WARNING", logger="smile2pay.policy"):
        pol = Policy.from_calibration(f)
    assert any("no capture_continuity section" in r.getMessage() for r in caplog.records)
    assert pol.continuity.window is None          # the code's whole-crop defaults, as the warning says
