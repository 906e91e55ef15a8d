"""``smile2pay calibrate-pad`` on real frames: LFW photos as the deployment's bona fide frames (grouped by person),
print and screen-replay attacks built at test time from other LFW people (written to tmp_path only), a CK+ 48 px
face too small to score and a corrupt file."""
import csv
import json
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from smile2pay.decision.policy import CALIBRATION_DIR, Policy, load_calibration


def _lfw_rows(data_dir):
    rows = list(csv.DictReader(open(data_dir / "lfw" / "manifest.csv", encoding="utf-8")))
    seen, out = set(), []
    for r in rows[::7]:
        if r["subject"] not in seen:
            seen.add(r["subject"])
            out.append(r)
    return out


def _inputs(tmp_path, data_dir, n_bona=60, n_attack=6):
    rows = _lfw_rows(data_dir)
    bona = tmp_path / "bona.csv"
    with open(bona, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "group"])
        for r in rows[:n_bona]:
            w.writerow([data_dir / r["path"], r["subject"]])
        ck = csv.DictReader(open(data_dir / "ckplus_neutral_peak48" / "manifest.csv", encoding="utf-8"))
        w.writerow([data_dir / next(ck)["path"], "ck"])          # a 48 px face: too small to score
        (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
        w.writerow(["broken.jpg", "broken"])                     # relative to the CSV's folder
    from smile2pay.pipeline import FacePipeline
    from smile2pay_tools.bench.pad_attacks import attack_print, attack_screen

    pipe = FacePipeline()
    for sp, make in (("print", attack_print), ("screen_replay", attack_screen)):
        (tmp_path / "attacks" / sp).mkdir(parents=True)
        for i, r in enumerate(rows[n_bona:n_bona + n_attack]):
            img = pipe.load(str(data_dir / r["path"]))
            d = pipe.detect(img)
            att, _ = make(img, d.boxes[0], np.random.default_rng([5, i]))
            cv2.imwrite(str(tmp_path / "attacks" / sp / f"{i}.jpg"), att)
    return bona, tmp_path / "attacks"


def _run(args, models_dir, timeout=600):
    env = {**os.environ, "SMILE2PAY_MODELS": str(models_dir)}
    return subprocess.run([sys.executable, "-m", "smile2pay.cli", "calibrate-pad", *map(str, args), "--json",
                           "--no-progress"], capture_output=True, text=True, env=env, timeout=timeout)


def test_calibrate_pad_cli_on_real_frames(tmp_path, data_dir, models_dir):
    bona, attacks = _inputs(tmp_path, data_dir)
    out = tmp_path / "cal.json"
    r = _run(["--bona-fide", bona, "--attacks", attacks, "--mode", "enforce", "--bpcer", "0.05", "--out", out],
             models_dir)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["frames"] == 62 and res["faces"] == 61 and sum(res["skipped"].values()) == 1
    assert next(iter(res["skipped"])).startswith("IMAGE_")
    tune, chk = res["bpcer"]["tune_half_in_sample"], res["bpcer"]["check_half"]
    assert tune["scored"]["n"] + chk["scored"]["n"] == 60 and tune["too_small_faces"] + chk["too_small_faces"] == 1
    assert tune["scored"]["n"] >= 20 and chk["scored"]["n"] >= 15
    # the threshold is the tune half's 5 % point: exactly floor(0.05 n) of its faces fall below it
    assert tune["scored"]["errors"] == math.floor(0.05 * tune["scored"]["n"])
    assert 0.0 <= res["threshold"] <= 1.0
    assert set(res["apcer"]) == {"print", "screen_replay"}
    assert all(a["scored"]["n"] + a["too_small_faces"] <= 6 for a in res["apcer"].values())
    # the file: pad section rewritten, the rest copied, and it loads as verify() loads it
    cal, shipped = load_calibration(out), load_calibration(CALIBRATION_DIR / "mobile.json")
    assert cal["pad"]["mode"] == "enforce" and cal["pad"]["threshold"] == res["threshold"]
    assert "why_report" not in cal["pad"] and cal["pad"]["measured"]["bpcer"]["check_half"] == chk
    assert {k: v for k, v in cal.items() if k not in ("pad", "history")} == \
           {k: v for k, v in shipped.items() if k not in ("pad", "history")}
    pol = Policy.from_calibration(out)
    assert pol.pad_mode == "enforce" and pol.pad_threshold == pytest.approx(res["threshold"])
    assert pol.pad_min_face_px == 64.0


@pytest.mark.parametrize("case, code", [
    ("missing", "DATASET_NOT_FOUND"), ("empty_dir", "DATASET_INVALID"), ("no_path_column", "DATASET_INVALID"),
    ("too_few", "DATASET_INVALID"), ("bad_bpcer", "REQUEST_INVALID"), ("bad_min_face", "REQUEST_INVALID"),
    ("non_utf8_folder", "DATASET_INVALID"), ("bad_calibration", "CALIBRATION_INVALID")])
def test_calibrate_pad_bad_input_is_exit_2_with_a_json_error(tmp_path, data_dir, models_dir, case, code):
    rows = _lfw_rows(data_dir)
    src, extra = tmp_path / "x", []
    if case == "empty_dir":
        src.mkdir()
    elif case == "no_path_column":
        src = tmp_path / "x.csv"
        src.write_text("file,group\na.jpg,1\n")
    elif case in ("too_few", "bad_bpcer", "bad_min_face", "non_utf8_folder", "bad_calibration"):
        # non_utf8_folder: the frames' group is a folder name that is not UTF-8 (it is hashed to split the halves)
        folder = src / os.fsdecode(b"cam\xff") if case == "non_utf8_folder" else src
        folder.mkdir(parents=True)
        for r in rows[:4]:
            (folder / os.path.basename(r["path"])).write_bytes((data_dir / r["path"]).read_bytes())
        cal = json.loads((CALIBRATION_DIR / "mobile.json").read_text())
        cal["au"] = [0.5]                                       # a section verify() reads, malformed
        (tmp_path / "bad_cal.json").write_text(json.dumps(cal))
        extra = {"bad_bpcer": ["--bpcer", "0.7"], "bad_min_face": ["--min-face-px", "-3"],
                 "bad_calibration": ["--calibration", tmp_path / "bad_cal.json"]}.get(case, [])
    r = _run(["--bona-fide", src, "--out", tmp_path / "o.json", *extra], models_dir)
    assert r.returncode == 2, (r.stdout, r.stderr[-1000:])
    assert json.loads(r.stdout)["error"]["code"] == code
    assert not (tmp_path / "o.json").exists()
