"""How far can the AU6+AU12 gate go with a given set of AU models? Single CV runs vs their average (seed ensemble).

For each ``--root`` (the output folder of ``smile2pay train-au --cv 5 [--seed S]``) and for the mean of their
out-of-fold probabilities, on the 309 CK+ neutral -> peak sequences (61 coded AU6+AU12), score =
min(AU6, AU12) at the peak (the shape of the shipped rule), and report:

* ROC AUC of the score and of AU6 alone;
* nested operating point: each fold's threshold is the highest-TPR one at <= 2% non-smile on the other
  folds' sequences (folds of seed 0, as in ``smile_to_pay.py``);
* oracle: the best TPR at <= 2% non-smile, and the non-smile rate at 95% TPR, with one threshold on the
  pooled scores (an upper bound for any threshold rule on that score, not an operating point).

Every probability is out-of-fold for its own run (the run's model never saw the subject); runs with other
seeds split subjects differently, so the average is still subject-held-out for every sequence.

    python benchmarks/au_gate_ceiling.py --root results/au_train24 --root results/au_seed1 --root results/au_seed2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from au_pair_gate import MAX_FPR, neutral_peak_sequences, threshold_at  # noqa: E402


def gate_report(probs: np.ndarray, seq: dict, j6: int, j12: int) -> dict:
    from sklearn.metrics import roc_auc_score

    b, y, fold = seq["peak"], seq["smile"], seq["fold"]
    s = np.minimum(probs[b, j6], probs[b, j12]).astype(np.float64)
    acc = np.zeros(len(y), bool)
    for f in np.unique(fold):
        tr, te = fold != f, fold == f
        acc[te] = s[te] >= threshold_at(s[tr], y[tr])
    pos = np.sort(s[y])
    t95 = pos[int(np.floor(0.05 * len(pos)))]
    return {"auc": round(float(roc_auc_score(y, s)), 4), "auc_au6": round(float(roc_auc_score(y, probs[b, j6])), 4),
            "smile_accepted": int(acc[y].sum()), "smiles": int(y.sum()),
            "non_smile_accepted": int(acc[~y].sum()), "non_smiles": int((~y).sum()),
            "oracle_tpr_at_fpr_2pct": round(float((s[y] >= threshold_at(s, y)).mean()), 4),
            "oracle_fpr_at_tpr_95pct": round(float((s[~y] >= t95).mean()), 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", action="append", required=True, help="train-au --cv output folder (repeatable)")
    ap.add_argument("--data", default=None, help="data folder (default SMILE2PAY_DATA)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "au_gate_ceiling.json"))
    args = ap.parse_args(argv)

    from smile2pay_tools.bench.common import load_oof, write_json
    from smile2pay.config import data_dir
    from smile2pay_tools.datasets import subject_folds
    from smile2pay_tools.train.au_train import MODEL_AUS

    t0 = time.perf_counter()
    data = Path(args.data) if args.data else Path(data_dir())
    runs = {}
    gt = None
    for r in args.root:
        g, p = load_oof(Path(r), "probs")
        if gt is not None and not np.array_equal(g["path"], gt["path"]):
            raise SystemExit(f"{r}: its cache rows differ from {args.root[0]}'s")
        gt = g
        if np.isnan(p[:, 0]).any():
            raise SystemExit(f"{r}: not every row has an out-of-fold prediction (are all 5 folds there?)")
        runs[Path(r).name] = p
    aus = [f"AU{a}" for a in MODEL_AUS]
    j6, j12 = aus.index("AU6"), aus.index("AU12")
    fold_of = subject_folds(list(gt["subject"]), k=5, seed=0)
    seqs = neutral_peak_sequences(gt, data)
    peak = [q["peak"] for q in seqs]
    smile = [q["smile"] for q in seqs]
    fold = [fold_of[q["subject"]] for q in seqs]
    seq = {"peak": np.array(peak), "smile": np.array(smile), "fold": np.array(fold)}
    if len(runs) > 1:
        runs[f"mean of {len(runs)} runs"] = np.mean(list(runs.values()), axis=0)
    from sklearn.metrics import f1_score, roc_auc_score

    codes = [set(str(c).split(";")) for c in gt["aus"]]
    results = {}
    for name, p in runs.items():
        r = results[name] = gate_report(p, seq, j6, j12)
        frames = {}
        for au, j in (("AU6", j6), ("AU12", j12)):     # every CK+ frame (neutral first frames included)
            yt = np.array([au[2:] in c for c in codes])
            frames[au] = {"auc": round(float(roc_auc_score(yt, p[:, j])), 4),
                          "f1_at_0.5": round(float(f1_score(yt, p[:, j] >= 0.5)), 4), "positives": int(yt.sum())}
        r["frames"] = frames
        print(f"{name:18s} AUC {r['auc']:.4f} (AU6 {r['auc_au6']:.4f})  nested: smile {r['smile_accepted']}/"
              f"{r['smiles']}, non-smile {r['non_smile_accepted']}/{r['non_smiles']}  oracle: TPR@2% "
              f"{100 * r['oracle_tpr_at_fpr_2pct']:.1f}%, non-smile@95% {100 * r['oracle_fpr_at_tpr_95pct']:.2f}%  frames: "
              f"AU6 AUC {frames['AU6']['auc']:.4f} F1 {frames['AU6']['f1_at_0.5']:.3f}, "
              f"AU12 AUC {frames['AU12']['auc']:.4f} F1 {frames['AU12']['f1_at_0.5']:.3f}")
    res = {"date": time.strftime("%Y-%m-%d"),
           "command": "python benchmarks/au_gate_ceiling.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "frames": int(len(gt["aus"])), "sequences": len(peak), "smiles": int(seq["smile"].sum()), "max_fpr": MAX_FPR, "results": results,
           "seconds": round(time.perf_counter() - t0, 1)}
    write_json(args.out, res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
