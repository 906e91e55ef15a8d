"""The CLI as a user runs it: a real subprocess, stdout must be pure JSON with --json."""
import json

from helpers import run


def test_models_check_ok(models_dir):
    code, out, _ = run("models", "check", "--models", str(models_dir), "--json")
    assert code == 0
    d = json.loads(out)
    assert d["ok"] is True and {m["name"] for m in d["models"]} >= {"det_500m", "w600k_mbf"}
    assert all(m["sha256_ok"] for m in d["models"])


def test_analyze_t1_six_faces_pure_json(t1_path):
    code, out, err = run("analyze", str(t1_path), "--json")
    assert code == 0, err
    d = json.loads(out)  # the whole stdout parses: no stray prints from insightface/onnxruntime
    img = d["images"][0]
    assert img["count"] == 6
    f = img["faces"][0]
    assert set(f) >= {"bbox", "det_score", "landmarks", "quality"}
    assert "embedding" not in f
    assert out.count("\n") == 1


def test_analyze_pad_scores_each_face_as_verify_does(t1_path, data_dir, tmp_path):
    """--pad: p_real per face, the same number the detector gives for that box; a 48 px CK+ face is not scored;
    a malformed pad section in --policy is a JSON error."""
    import csv

    import numpy as np

    from smile2pay.pipeline import FacePipeline
    from smile2pay.vision.pad import PresentationAttackDetector

    ck = data_dir / next(csv.DictReader(open(data_dir / "ckplus_neutral_peak48" / "manifest.csv")))["path"]
    code, out, err = run("analyze", str(t1_path), str(ck), "--pad", "--no-embed", "--json")
    assert code == 0, err
    imgs = json.loads(out)["images"]
    pads = [f["pad"] for f in imgs[0]["faces"]]
    assert len(pads) == 6 and all(0.0 <= p["p_real"] <= 1.0 and p["min_face_px"] == 64 for p in pads)
    assert all(p["bona_fide"] == (p["p_real"] >= p["threshold"]) for p in pads)
    pipe = FacePipeline()
    img = pipe.load(str(t1_path))
    boxes = np.array([f["bbox"] for f in imgs[0]["faces"]])
    expect = PresentationAttackDetector.from_pipeline(pipe).scores(img, boxes)
    assert np.allclose([p["p_real"] for p in pads], expect, atol=1e-4)
    assert imgs[1]["faces"][0]["pad"]["p_real"] is None and imgs[1]["faces"][0]["pad"]["bona_fide"] is None
    bad = tmp_path / "bad_policy.json"
    from smile2pay.decision.policy import CALIBRATION_DIR

    cal = json.loads((CALIBRATION_DIR / "mobile.json").read_text())
    cal["pad"]["mode"] = "enfroce"
    bad.write_text(json.dumps(cal))
    code, out, _ = run("analyze", str(t1_path), "--pad", "--policy", str(bad), "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "CALIBRATION_INVALID"


def test_analyze_bad_input_exit_2_json_error(tmp_path, t1_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("hello")
    code, out, _ = run("analyze", str(bad), str(tmp_path / "missing.png"), str(t1_path), "--json")
    assert code == 2
    d = json.loads(out)
    codes = [i.get("error", {}).get("code") for i in d["images"]]
    assert codes == ["IMAGE_UNREADABLE", "IMAGE_NOT_FOUND", None]
    assert d["images"][2]["count"] == 6  # good images are still analysed


def test_analyze_odd_policy_and_file_name(tmp_path, t1_path):
    """A --policy whose au section is a list is a JSON error (exit 2, not a TypeError); a photo whose file name is
    not UTF-8 is analysed and its name printed (escaped), in readable lines too."""
    import os

    from smile2pay.decision.policy import CALIBRATION_DIR

    cal = json.loads((CALIBRATION_DIR / "mobile.json").read_text())
    cal["au"] = [0.2, 0.6]
    bad = tmp_path / "bad_policy.json"
    bad.write_text(json.dumps(cal))
    code, out, err = run("analyze", str(t1_path), "--pad", "--no-embed", "--policy", str(bad), "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "CALIBRATION_INVALID", err[-2000:]
    code, out, err = run("analyze", str(t1_path), "--no-embed", "--policy", str(bad), "--json")   # without --pad
    assert code == 2 and json.loads(out)["error"]["code"] == "REQUEST_INVALID", err[-2000:]
    odd = tmp_path / os.fsdecode(b"caf\xe9.jpg")        # Latin-1 bytes: not UTF-8
    odd.symlink_to(t1_path)
    code, out, err = run("analyze", str(odd), "--no-embed")
    assert code == 0 and "Traceback" not in err and "6 faces" in out, err[-2000:]


def test_demo_is_the_main_job(data_dir):
    """README's first command: enrol + verify on the shared sample photos (identity and smile to pay)."""
    code, out, err = run("demo", "--data", str(data_dir), "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["genuine"]["accepted"] == d["genuine"]["total"] > 10 and d["impostor"]["accepted"] == 0
    cases = d["smile_to_pay"]["cases"]
    assert len(cases) == 9 and all(c["approved"] == c["expected"] for c in cases)
    assert {c["probe"] for c in cases if c["approved"]} == {"own neutral -> smile burst"}
    # the report names both scales the smile is judged on: the AU stage's and the probe-fused one (shipped file)
    from smile2pay.decision.policy import Policy

    pp = Policy.from_calibration().with_smile_probe()
    assert d["smile_to_pay"]["au_thresholds_with_smile_probe"] == {a: pp.au_thresholds[a] for a in ("AU6", "AU12")}
    assert d["smile_to_pay"]["au_thresholds"]["AU12"] == Policy.from_calibration().au_thresholds["AU12"]


def test_verify_cli_exit_codes(tmp_path, data_dir):
    """Enrol from a neutral frame; a same-session neutral -> smile burst pays (exit 0), the reverse order
    does not (exit 1), a missing frame is a JSON error (exit 2). Frames: a CK+ sequence's first and peak
    frames on a 640x480 camera-like canvas (two *different photos* would be CAPTURE_DISCONTINUITY)."""
    import cv2

    from smile2pay_tools.bench import clips

    subj, neutral, peak = clips.smiling_people(data_dir, 1)[0]
    cv2.imwrite(str(tmp_path / "enrol.png"), clips.compose(neutral))
    f0, f1 = clips.clip_frames([(neutral, 1), (peak, 1)], seed=1)
    burst = [str(tmp_path / "f0.png"), str(tmp_path / "f1.png")]  # neutral, smiling
    cv2.imwrite(burst[0], f0)
    cv2.imwrite(burst[1], f1)
    g = str(tmp_path / "g")
    code, out, err = run("enroll", "--gallery", g, "gerhard", str(tmp_path / "enrol.png"), "--create", "--json")
    assert code == 0, err
    code, out, _ = run("verify", "--gallery", g, "gerhard", *burst, "--json")
    dec = json.loads(out)
    assert code == 0 and dec["approved"] is True and dec["identity"]["far"] == 1e-4, dec.get("reasons")
    code, out, _ = run("verify", "--gallery", g, "gerhard", *burst[::-1], "--json")
    assert code == 1 and "LIVENESS_FAILED" in json.loads(out)["reasons"]
    code, out, _ = run("verify", "--gallery", g, "gerhard", burst[0], str(tmp_path / "nope.jpg"), "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "IMAGE_NOT_FOUND"
    code, out, _ = run("verify", "--gallery", g, "gerhard", *burst, "--require", "AU6+", "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "RULE_INVALID"
