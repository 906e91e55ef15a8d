"""smile2pay_tools.bench on real data: the real LFW pairs.txt and the CLI on real images (deepface pairs, seconds)."""
import json
import os

from smile2pay_tools.datasets_id import load_pairs

from helpers import run as _cli


# ------------------------------------------------------------------------------- loaders
def test_real_lfw_pairs_txt(data_dir):
    p = load_pairs(data_dir / "lfw" / "pairs.txt")
    assert len(p) == 6000 and sum(q.same for q in p) == 3000
    assert sorted({q.fold for q in p}) == list(range(10))
    assert all(sum(q.same for q in p if q.fold == f) == 300 for f in range(10))
    assert os.path.isfile(p[0].path_a) and os.path.isfile(p[-1].path_b)


# ------------------------------------------------------------------------------- CLI on real images
def test_cli_bench_pairs_and_calibrate_on_deepface_pairs(tmp_path, data_dir):
    pairs = data_dir / "samples" / "deepface" / "pairs.csv"
    code, out, err = _cli("bench", "pairs", "--pairs", str(pairs), "--out", str(tmp_path), "--no-cache",
                          "--no-progress", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert (d["pairs"], d["genuine"], d["impostors"], d["images"]) == (300, 38, 262, 25)
    # the report's numbers are those of its own scores: recompute AUC from the written ROC inputs
    assert d["kfold_accuracy"] is None                             # a CSV without folds
    ops = {op["far_target"]: op for op in d["tar_at_far"]}
    assert ops[1e-2]["supported"] is False and "NOT SUPPORTED" in ops[1e-2]["note"]   # 262 < 300
    assert ops[1e-3]["n_impostors"] == 262 and ops[1e-3]["min_impostors"] == 3000
    assert d["pairs_unscored"] == d["pairs_unscored_genuine"] + d["pairs_unscored_impostor"]
    assert 0.9 < d["auc"] <= 1.0
    for f in ("pairs_deepface.json", "pairs_deepface.html", "pairs_deepface.md", "pairs_deepface_roc.png",
              "pairs_deepface_det.png", "pairs_deepface_hist.png"):
        assert (tmp_path / f).stat().st_size > 0, f
    assert json.loads((tmp_path / "pairs_deepface.json").read_text())["auc"] == d["auc"]

    cal = tmp_path / "thresholds.json"
    code, out, err = _cli("calibrate", "--pairs", str(pairs), "--far", "1e-2", "--bootstrap", "10",
                          "--out", str(cal), "--no-progress", "--json")
    assert code == 0, err
    from smile2pay.decision.policy import Policy

    pol = Policy.from_calibration(cal, far=1e-2)
    op = json.loads(cal.read_text())["identity"]["operating_points"][0]
    assert pol.identity_threshold == op["threshold"] and op["impostors"] == 262 and op["supported"] is False
    assert op["false_accepts"] <= 2                                # floor(0.01 * 262)
