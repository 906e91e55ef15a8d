"""smile2pay_tools.bench: SIDE/SEDI pairing, per-group FAR, calibration helpers and dataset loaders on hand-made
cases (checked by hand and against scikit-learn), and the bench CLI's errors (no weights, no images)."""
import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from smile2pay_tools.bench.calibrate import au_thresholds, calibrate_pairs
from smile2pay_tools.bench.stats import far_by_group, separability, side_sedi_counts, side_sedi_scores
from smile2pay_tools.datasets_id import (load_identity_csv, load_lfw_pairs_txt, load_pairs, load_pairs_csv, pair_group)
from smile2pay.errors import RequestError
from smile2pay.metrics import clopper_pearson

from helpers import run as _cli


# ------------------------------------------------------------------------------- SIDE / SEDI
def _unit(*v):
    a = np.asarray(v, np.float64)
    return a / np.linalg.norm(a)


def test_side_sedi_pairing_by_hand():
    # subjects a,a,b,b ; expressions x,y,x,y ; vectors chosen so every pair has a distinct cosine
    e = np.stack([_unit(1, 0, 0), _unit(1, 1, 0), _unit(0, 1, 0), _unit(0, 1, 1)])
    c = side_sedi_scores(e, ["a", "a", "b", "b"], ["x", "y", "x", "y"])
    cos = e @ e.T
    # SIDE: same subject, different expression = (0,1), (2,3); SEDI: same expression, other subject = (0,2), (1,3)
    assert sorted(c["side"]) == pytest.approx(sorted([cos[0, 1], cos[2, 3]]))
    assert sorted(c["sedi"]) == pytest.approx(sorted([cos[0, 2], cos[1, 3]]))
    assert c["sise"].size == 0
    assert sorted(c["dide"]) == pytest.approx(sorted([cos[0, 3], cos[1, 2]]))
    assert cos[0, 2] == pytest.approx(0.0) and cos[0, 1] == pytest.approx(math.sqrt(0.5))


def test_side_sedi_skips_unlabelled_and_no_face_rows():
    e = np.stack([_unit(1, 0), _unit(0, 1), _unit(1, 1), [np.nan, np.nan], _unit(1, 0)])
    c = side_sedi_scores(e, ["a", "a", "b", "b", "c"], ["x", "y", "x", "y", ""])
    # row 3 has no face, row 4 no expression: left are rows 0,1,2 -> SIDE (0,1), SEDI (0,2), DIDE (1,2)
    assert c["side"].tolist() == pytest.approx([0.0])
    assert c["sedi"].tolist() == pytest.approx([math.sqrt(0.5)])
    assert c["dide"].tolist() == pytest.approx([math.sqrt(0.5)])
    assert side_sedi_counts(["a", "a", "b", "b"], ["x", "y", "x", "y"]) == {"side": 2, "sedi": 2, "sise": 0, "dide": 2}


def test_side_sedi_blocks_agree_with_one_block():
    rng = np.random.default_rng(1)
    e = rng.normal(size=(60, 8))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    subj, expr = rng.integers(0, 6, 60), rng.integers(0, 3, 60)
    a, b = side_sedi_scores(e, subj, expr, block=7), side_sedi_scores(e, subj, expr, block=1000)
    for k in a:
        assert np.sort(a[k]) == pytest.approx(np.sort(b[k]), abs=1e-6)  # float32 dot products
    n = side_sedi_counts(subj, expr)
    assert {k: v.size for k, v in a.items()} == n and sum(n.values()) == 60 * 59 // 2


def test_separability_matches_sklearn_with_ties():
    a, b = np.array([0.9, 0.5, 0.5, 0.2]), np.array([0.5, 0.1, 0.3])
    ref = roc_auc_score(np.r_[np.ones(4), np.zeros(3)], np.r_[a, b])
    assert separability(a, b) == pytest.approx(ref)
    # by hand: pairs a>b: 0.9>all(3), 0.5>0.1,0.3 (2 each, tie with 0.5 = 1/2 each), 0.2>0.1 (1) -> (3+2.5+2.5+1)/12
    assert separability(a, b) == pytest.approx(9 / 12)
    assert separability([], b) is None


# ------------------------------------------------------------------------------- per-group FAR
def test_far_by_group_by_hand():
    s = [0.9, 0.1, 0.6, 0.2, 0.7, 0.3, 0.8, 0.5]
    y = [1, 0, 0, 0, 1, 0, 1, 0]
    g = ["A", "A", "A", "A", "B", "B", "B", ""]
    r = far_by_group(s, y, g, {"t": 0.5})
    assert set(r) == {"A", "B"}                               # "" (unlabelled) skipped
    a = r["A"]["at"]["t"]
    assert (r["A"]["impostors"], r["A"]["genuine"]) == (3, 1)
    assert a["false_accepts"] == 1 and a["far"] == pytest.approx(1 / 3) and a["frr"] == 0.0
    assert a["far_ci95"] == pytest.approx(list(clopper_pearson(1, 3)))
    b = r["B"]["at"]["t"]
    assert b["false_accepts"] == 0 and b["far"] == 0.0 and r["B"]["genuine"] == 2
    assert b["far_upper95"] == pytest.approx(1 - 0.05 ** (1 / 1))  # 1 impostor, none accepted
    with pytest.raises(ValueError):
        far_by_group([0.1], [0, 1], ["A", "A"], {"t": 0.5})


def test_pair_group():
    assert pair_group("happy", "happy") == "happy"
    assert pair_group("neutral", "happy") == pair_group("happy", "neutral") == "happy|neutral"
    assert pair_group("", "") == "" and pair_group("x", "") == "?|x"


# ------------------------------------------------------------------------------- calibration helpers
def test_calibrate_pairs_by_hand():
    imp = np.array([0.9, 0.8, 0.1, 0.0, -0.1, 0.2, 0.3, 0.05, 0.15, 0.25])
    gen = np.array([0.95, 0.85, 0.5, 0.7])
    r = calibrate_pairs(gen, imp, None, None, [0.1, 0.01], bootstrap=20)
    op10, op01 = r["operating_points"]
    # FAR 0.1 of 10 impostors: one false accept allowed -> reject 0.8 and below; accept only 0.9
    assert op10["false_accepts"] == 1 and 0.8 < op10["threshold"] <= 0.8 + 2e-6   # rounded up, never onto 0.8
    assert op10["tar"] == pytest.approx(2 / 4)                # 0.95, 0.85
    assert op10["supported"] is False                          # 10 < 3 / 0.1 = 30
    assert op01["false_accepts"] == 0 and op01["threshold"] > 0.9 and op01["tar"] == pytest.approx(1 / 4)
    assert "threshold_ci95_pair_bootstrap" in op10
    sa, sb = np.arange(10) % 5, (np.arange(10) + 1) % 5
    r2 = calibrate_pairs(gen, imp, sa, sb, [0.1], bootstrap=20)
    assert r2["subjects"] == 5 and "threshold_ci95_subject_bootstrap" in r2["operating_points"][0]


def test_au_thresholds_by_hand():
    neg = [0.05, 0.1, 0.2, 0.6]          # one AU-absent image scores high
    pos = [0.3, 0.7, 0.8, 0.9]
    r = au_thresholds(np.r_[neg, pos], np.r_[np.zeros(4, bool), np.ones(4, bool)], fpr=0.25, miss=0.25)
    # FPR <= 0.25 of 4 negatives: 1 allowed; the most positives come with threshold 0.3 (0.6 is the one FP)
    assert r["threshold"] == pytest.approx(0.3) and r["false_positives"] == 1 and r["tpr"] == 1.0
    # at most 1 of 4 positives below absent_threshold -> the 2nd lowest positive (0.7), capped at threshold
    assert r["absent_threshold"] == pytest.approx(0.3)
    r = au_thresholds(np.r_[neg, pos], np.r_[np.zeros(4, bool), np.ones(4, bool)], fpr=0.2, miss=0.25)  # 0 of 4 allowed
    assert r["threshold"] == pytest.approx(0.7) and r["false_positives"] == 0
    assert r["absent_threshold"] == pytest.approx(0.7) and r["present_below_absent_threshold"] == 1


# ------------------------------------------------------------------------------- loaders
def test_lfw_pairs_txt_format(tmp_path):
    (tmp_path / "pairs.txt").write_text("2\t1\nAnn\t1\t2\nBob\t1\tCid\t3\nDan\t2\t4\nEve\t1\tFay\t12\n")
    p = load_lfw_pairs_txt(tmp_path / "pairs.txt", root="/r")
    assert [(q.same, q.fold) for q in p] == [(True, 0), (False, 0), (True, 1), (False, 1)]
    assert p[0].path_a == "/r/Ann/Ann_0001.jpg" and p[0].path_b == "/r/Ann/Ann_0002.jpg"
    assert p[3].path_b == "/r/Fay/Fay_0012.jpg" and (p[3].subject_a, p[3].subject_b) == ("Eve", "Fay")
    (tmp_path / "bad.txt").write_text("1 1\nAnn 1\n")
    with pytest.raises(RequestError):
        load_lfw_pairs_txt(tmp_path / "bad.txt")


def test_pairs_csv_groups_and_errors(tmp_path):
    (tmp_path / "p.csv").write_text("path_a,path_b,same,expression_a,expression_b\na.jpg,b.jpg,1,happy,happy\n"
                                    "a.jpg,c.jpg,0,happy,neutral\n")
    p = load_pairs_csv(tmp_path / "p.csv", group_col="expression")
    assert [q.group for q in p] == ["happy", "happy|neutral"]
    assert p[0].path_a == str(tmp_path / "a.jpg") and p[1].same is False
    (tmp_path / "q.csv").write_text("path_a,path_b,same\na.jpg,b.jpg,maybe\n")
    with pytest.raises(RequestError):
        load_pairs_csv(tmp_path / "q.csv")
    with pytest.raises(RequestError):
        load_pairs(tmp_path / "missing.csv")


def test_identity_csv_au_combination(tmp_path):
    (tmp_path / "m.csv").write_text("path,subject,au_codes,group\nx.png,S1,12;6;25,g1\ny.png,S1,,g2\n")
    s = load_identity_csv(tmp_path / "m.csv")
    assert [(x.expression, x.group) for x in s] == [("AU6+AU12+AU25", "g1"), ("none", "g2")]
    assert s[0].aus == frozenset({6, 12, 25})


# ------------------------------------------------------------------------------- CLI errors
def test_cli_bench_errors_are_json(tmp_path):
    code, out, _ = _cli("bench", "pairs", "--pairs", str(tmp_path / "nope.txt"), "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "DATASET_NOT_FOUND"
    code, out, _ = _cli("calibrate", "--out", str(tmp_path / "x.json"), "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "REQUEST_INVALID"


def test_missing_bench_module_fails_at_call_time_not_at_startup(monkeypatch):
    import argparse

    from smile2pay.cli import bench as cli_bench
    from smile2pay.errors import Smile2PayError

    monkeypatch.setitem(cli_bench.BENCHES, "gallery", "smile2pay_tools.bench.no_such_module")
    p = argparse.ArgumentParser()
    cli_bench._cfg_bench(p)                       # building the parser does not fail
    args = p.parse_args(["gallery"])
    args.json = True
    with pytest.raises(Smile2PayError) as e:
        cli_bench.cmd_bench(args)
    assert e.value.code == "BENCH_UNAVAILABLE"


def test_ck_kind_by_hand():
    """A CK+ pair row is a smile by its AU codes, ambiguous when labelled happy without AU6+AU12, else other."""
    from smile2pay_tools.bench.clips import ck_kind

    assert ck_kind({"is_smile_au6_au12": "1", "peak_label": "happy"}) == "smile"
    assert ck_kind({"is_smile_au6_au12": "1", "peak_label": "disgust"}) == "smile"   # coded AU6+AU12
    assert ck_kind({"is_smile_au6_au12": "0", "peak_label": "happy"}) == "ambiguous"
    assert ck_kind({"is_smile_au6_au12": "0", "peak_label": "contempt"}) == "other"
    assert ck_kind({"is_smile_au6_au12": "0", "peak_label": "surprise"}) == "other"


def test_missed_smiles_sheet_refuses_a_path_inside_the_repository(tmp_path, capsys):
    """LFW images are not ours to redistribute: the contact sheet is never written into the repository."""
    import importlib.util
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("au_missed_smiles", repo / "benchmarks" / "au_missed_smiles.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--sheet", str(repo / "docs" / "img" / "x.png"), "--out", str(tmp_path / "o.json")]) == 2
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "REQUEST_INVALID"
    assert not (repo / "docs" / "img" / "x.png").exists() and not (tmp_path / "o.json").exists()
