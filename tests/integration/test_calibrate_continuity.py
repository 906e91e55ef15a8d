"""The capture-continuity limits fitted by the calibrate-continuity CLI on real frames: CK+ same-session
neutral -> peak pairs as the deployment's bona fide sessions, LFW two-photo pairs as the attack."""
import csv
import json
import os
import subprocess
import sys

import pytest

from smile2pay.decision.continuity import FACE_WINDOW
from smile2pay.decision.policy import Policy


def _sessions(tmp_path, data_dir, n=40):
    rows = list(csv.DictReader(open(data_dir / "ckplus_neutral_peak48" / "pairs_neutral_peak.csv", encoding="utf-8")))
    out = tmp_path / "sessions.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "session"])
        for r in rows[:n]:
            w.writerow([data_dir / r["neutral_path"], r["sequence"]])
            w.writerow([data_dir / r["peak_path"], r["sequence"]])
    return out


def _attacks(tmp_path, data_dir, n=20):
    by: dict = {}
    for r in csv.DictReader(open(data_dir / "lfw" / "manifest.csv", encoding="utf-8")):
        by.setdefault(r["subject"], {}).setdefault(r["label"], []).append(r["path"])
    out = tmp_path / "attacks.csv"
    k = 0
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "session"])
        for s, v in sorted(by.items()):
            if v.get("neutral") and v.get("happiness") and k < n:
                w.writerow([data_dir / v["neutral"][0], s])
                w.writerow([data_dir / v["happiness"][0], s])
                k += 1
    return out


def _run(args, models_dir, timeout=600):
    env = {**os.environ, "SMILE2PAY_MODELS": str(models_dir)}
    return subprocess.run([sys.executable, "-m", "smile2pay.cli", "calibrate-continuity", *map(str, args), "--json",
                           "--no-progress"], capture_output=True, text=True, env=env, timeout=timeout)


def test_calibrate_continuity_cli_on_real_frames(tmp_path, data_dir, models_dir):
    out = tmp_path / "cal.json"
    r = _run(["--sessions", _sessions(tmp_path, data_dir), "--attacks", _attacks(tmp_path, data_dir), "--out", out],
             models_dir)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["usable_sessions"] == 40
    assert res["limits"]["cues"] == ["lighting", "upper", "yaw", "roll", "balance", "contrast"]
    chk = res["same_session_flagged"]["check_half"]
    assert chk["sessions"] > 10 and chk["rate"] <= 0.2            # one camera, one session: few flagged
    assert res["same_session_flagged"]["tune_half_in_sample"]["flagged"] == 0    # margin 1: the tune max
    assert res["attacks_flagged"]["rate"] >= 0.8                   # two photos of one person
    pol = Policy.from_calibration(out)
    assert pol.continuity.max_score == pytest.approx(res["limits"]["max_score"])
    assert pol.continuity.scale_balance == pytest.approx(res["limits"]["scale_balance"])
    assert pol.stream_continuity == pol.continuity                 # --section both
    assert res["limits"]["window"] == list(FACE_WINDOW) and pol.continuity.window == FACE_WINDOW   # the default
    # bursts only: the input file's stream section is kept; four cues: no balance / contrast
    out2 = tmp_path / "cal2.json"
    r = _run(["--sessions", _sessions(tmp_path, data_dir), "--out", out2, "--section", "bursts", "--cues", "four",
              "--margin", "0.9", "--window", "full"], models_dir)
    assert r.returncode == 0, r.stderr[-2000:]
    pol2 = Policy.from_calibration(out2)
    assert pol2.continuity.scale_balance is None and pol2.stream_continuity == Policy.from_calibration().stream_continuity
    assert pol2.continuity.max_score == pytest.approx(json.loads(r.stdout)["limits"]["max_score"])
    assert json.loads(r.stdout)["limits"]["margin"] == 0.9
    assert pol2.continuity.window is None and "window" not in json.loads(r.stdout)["limits"]   # the whole crop


def test_calibrate_continuity_bad_input(tmp_path, data_dir, models_dir):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,subject\nx.png,s1\n")
    r = _run(["--sessions", bad, "--out", tmp_path / "x.json"], models_dir, timeout=120)
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["code"] == "DATASET_INVALID"
    r = _run(["--sessions", tmp_path / "none.csv", "--out", tmp_path / "x.json"], models_dir, timeout=120)
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["code"] == "DATASET_INVALID"
    # frames that are not faces / not images: no usable session, a typed error, nothing written
    junk = tmp_path / "junk.csv"
    (tmp_path / "a.png").write_bytes(b"not an image")
    junk.write_text("path,session\na.png,s1\na.png,s1\nmissing.png,s2\nmissing.png,s2\n")
    r = _run(["--sessions", junk, "--out", tmp_path / "x.json"], models_dir, timeout=120)
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["code"] == "DATASET_INVALID"
    r = _run(["--sessions", _sessions(tmp_path, data_dir, 4), "--out", tmp_path / "x.json", "--margin", "-1"],
             models_dir, timeout=120)
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["code"] == "REQUEST_INVALID"
    # a spreadsheet's byte order mark is not part of the first column's name; a path with a NUL byte is a frame
    # that cannot be read (skipped), not a ValueError
    odd = tmp_path / "odd.csv"
    odd.write_bytes(b"\xef\xbb\xbfpath,session\r\na\x00b.png,s1\r\na\x00b.png,s1\r\n")
    r = _run(["--sessions", odd, "--out", tmp_path / "x.json"], models_dir, timeout=120)
    err = json.loads(r.stdout)["error"]
    assert r.returncode == 2 and err["code"] == "DATASET_INVALID" and "IMAGE_NOT_FOUND" in err["message"], err
    # the calibration file to start from must load as verify() loads it, before anything is written from it
    from smile2pay.decision.policy import CALIBRATION_DIR

    cal = json.loads((CALIBRATION_DIR / "mobile.json").read_text())
    cal["identity"]["tail_shape"] = [1]
    (tmp_path / "bad_cal.json").write_text(json.dumps(cal))
    r = _run(["--sessions", _sessions(tmp_path, data_dir, 4), "--out", tmp_path / "x.json", "--calibration",
              tmp_path / "bad_cal.json"], models_dir, timeout=120)
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["code"] == "CALIBRATION_INVALID"
    assert not (tmp_path / "x.json").exists()
