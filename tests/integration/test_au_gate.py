"""The smile gate calibrated by the calibrate-au CLI on real frames (CK+ crops, real AU model)."""
import pytest
from smile2pay_tools.bench.clips import ck_kind


def _ck_frames_csv(tmp_path, data_dir, n_subjects=14):
    """path,subject,label rows from CK+ neutral -> peak sequences (real images, paths absolute)."""
    import csv

    rows = list(csv.DictReader(open(data_dir / "ckplus_neutral_peak48" / "pairs_neutral_peak.csv", encoding="utf-8")))
    smiles = [r for r in rows if r["is_smile_au6_au12"] == "1"][:n_subjects]
    subj = {r["subject"] for r in smiles}
    others = [r for r in rows if ck_kind(r) == "other" and r["subject"] in subj][:n_subjects]
    out = tmp_path / "frames.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "subject", "label", "burst"])
        for r in smiles + others:
            lab = "smile" if r["is_smile_au6_au12"] == "1" else "other"
            w.writerow([data_dir / r["neutral_path"], r["subject"], "neutral", r["sequence"] + r["subject"]])
            w.writerow([data_dir / r["peak_path"], r["subject"], lab, r["sequence"] + r["subject"]])
    return out


def test_calibrate_au_cli_on_real_frames(tmp_path, data_dir, models_dir, monkeypatch):
    import json
    import subprocess
    import sys

    from smile2pay.decision.policy import Policy

    frames = _ck_frames_csv(tmp_path, data_dir)
    out = tmp_path / "cal.json"
    env = {**__import__("os").environ, "SMILE2PAY_MODELS": str(models_dir)}
    r = subprocess.run([sys.executable, "-m", "smile2pay.cli", "calibrate-au", "--frames", str(frames), "--out", str(out),
                        "--max-fpr", "0.1", "--json", "--no-progress"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["smiles"] > 0 and res["probes"] > res["smiles"]
    rate = next(iter(res["rates"].values()))
    assert rate["fpr"] <= 0.1 and rate["tpr"] > 0.5           # CK+ smiles are easy for the shipped model
    # 14 smiles are too few to know a smile rate (a warning, not a refusal); 14 others resolve a 10 % false-pass rate
    assert len(res["warnings"]) == 1 and "smile frames were analysed" in res["warnings"][0], res["warnings"]
    pol = Policy.from_calibration(out)
    assert pol.au_threshold("AU12") == pytest.approx(res["thresholds"]["AU12"])
    assert pol.burst_min_delta == pytest.approx(res["delta"]) and pol.baseline_min_delta == pytest.approx(res["delta"])
    # the smile probe's operating point recalibrated on the same frames (fused scale), the shipped weight kept
    sp = res["smile_probe"]
    pp = pol.with_smile_probe()
    assert pp.probe_weight == sp["weight"] == Policy.from_calibration().probe_calibration["weight"]
    assert pp.au_threshold("AU12") == pytest.approx(sp["thresholds"]["AU12"])
    assert pp.burst_min_delta == pytest.approx(sp["delta"]) and next(iter(sp["rates"].values()))["fpr"] <= 0.1
    # calibrate-au recalibrates bursts only: the single-frame weight and the thresholds chosen at it are kept
    shipped = Policy.from_calibration().probe_calibration
    assert pol.probe_calibration["single_frame_weight"] == shipped["single_frame_weight"]
    assert pol.probe_calibration["single_frame_thresholds"] == shipped["single_frame_thresholds"]
    # bad input: a typed error and exit 2, JSON on stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("path,subject,label\nx.png,s1,grin\n")
    r = subprocess.run([sys.executable, "-m", "smile2pay.cli", "calibrate-au", "--frames", str(bad), "--out",
                        str(tmp_path / "x.json"), "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["code"] == "DATASET_INVALID"
    r = subprocess.run([sys.executable, "-m", "smile2pay.cli", "calibrate-au", "--frames", str(tmp_path / "none.csv"),
                        "--out", str(tmp_path / "x.json"), "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and not (tmp_path / "x.json").exists()


def test_calibrate_au_bad_rows_and_calibration_are_exit_2(tmp_path, data_dir, models_dir):
    """A short row (no path), an empty subject, a malformed starting calibration: exit 2 with a JSON error."""
    import json
    import subprocess
    import sys

    from smile2pay.decision.policy import CALIBRATION_DIR

    def run(*args):
        r = subprocess.run([sys.executable, "-m", "smile2pay.cli", "calibrate-au", *map(str, args), "--out",
                            str(tmp_path / "x.json"), "--json", "--no-progress"], capture_output=True, text=True,
                           env={**__import__("os").environ, "SMILE2PAY_MODELS": str(models_dir)}, timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        return json.loads(r.stdout)["error"]

    short = tmp_path / "short.csv"
    short.write_text("label,subject,path\nsmile\n")
    assert run("--frames", short)["code"] == "DATASET_INVALID"
    assert run("--frames", short, "--max-pairs", 0)["code"] == "REQUEST_INVALID"
    no_subject = tmp_path / "no_subject.csv"
    no_subject.write_text("path,subject,label\na.png,,smile\n")
    assert run("--frames", no_subject)["code"] == "DATASET_INVALID"
    cal = json.loads((CALIBRATION_DIR / "mobile.json").read_text())
    cal["au_change"] = "baseline_min_delta"
    (tmp_path / "bad_cal.json").write_text(json.dumps(cal))
    assert run("--frames", _ck_frames_csv(tmp_path, data_dir, 2), "--calibration",
               tmp_path / "bad_cal.json")["code"] == "CALIBRATION_INVALID"
    assert not (tmp_path / "x.json").exists()
