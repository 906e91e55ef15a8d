"""Which LFW smiles does the shipped smile gate miss? A seeded sample for a person to look at (issue 14).

    python benchmarks/au_missed_smiles.py [--run results/au3] [--n 30] [--seed 7] [--sheet /tmp/missed.png]

The LFW test people's neutral -> smiling photo pairs of ``benchmarks/au_cross_population.py`` (same images, same
fused AU stage, the shipped calibration ``smile2pay/decision/calibration/mobile.json``) are judged by the gate's
rule (peak >= AU thresholds, neutral photo below the absence threshold, rise >= the required delta). The script
prints why the missed pairs fail, writes ``benchmarks/results/au_missed_smiles.json`` (paths and scores of a seeded
sample of the missed smiling photos, no pixels) and, with ``--sheet``, a contact sheet of the sample to a path
**outside the repository** (LFW's terms forbid redistribution: never commit it).

``benchmarks/results/au_missed_smiles_audit.json`` holds one person's reading of that sheet (clear smile / faint
closed-mouth smile / no visible smile or talking), summarised here when present: a judgement, not ground truth.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "au_missed_smiles.json"
AUDIT = REPO / "benchmarks" / "results" / "au_missed_smiles_audit.json"


def main(argv=None) -> int:
    ap_ = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap_.add_argument("--run", default="results/au3", help="train-au --recipe v3 output folder (caches)")
    ap_.add_argument("--data", default=os.environ.get("SMILE2PAY_DATA", "../shared/data"))
    ap_.add_argument("--models", default=os.environ.get("SMILE2PAY_MODELS", "../shared/models"))
    ap_.add_argument("--n", type=int, default=30)
    ap_.add_argument("--seed", type=int, default=7)
    ap_.add_argument("--sheet", help="contact sheet PNG of the sample, outside the repository")
    ap_.add_argument("--out", default=str(OUT))
    args = ap_.parse_args(argv)
    if args.sheet and Path(args.sheet).resolve().is_relative_to(REPO):
        print(json.dumps({"error": {"code": "REQUEST_INVALID",
                                    "message": "--sheet must be outside the repository (LFW images are not ours "
                                               "to redistribute)"}}))
        return 2

    from smile2pay_tools.bench import au_population as ap
    from smile2pay_tools.train.au_mix import load_sources, source_masks

    cal = json.loads((REPO / "smile2pay" / "decision" / "calibration" / "mobile.json").read_text())
    t6, t12 = cal["au"]["AU6"]["threshold"], cal["au"]["AU12"]["threshold"]
    absent = cal["au"]["AU12"]["absent_threshold"]
    delta = cal["au_change"]["burst_min_delta"]
    scale = cal["au_change"].get("rise_scale", "probability")     # the AU stage's section: probability so far
    run_dir = Path(args.run)
    ck, fer, lfw = load_sources(args.data, args.models, run_dir / "cache", progress=False)
    masks = source_masks(fer, lfw)
    model = ap.load_au_model(run_dir / "au_mobile.onnx")
    names = list(model.au_names)
    happy = ap.happy_scores(args.models, lfw["crops"])      # the product's AU stage, as au_cross_population.py
    P = ap.fuse_matrix(ap.model_scores(model, lfw["crops"])[0], names, happy)
    F6, F12 = P[:, names.index("AU6")], P[:, names.index("AU12")]
    pairs = [(a, b) for a, b, k in ap.lfw_pairs(lfw, masks["lfw_test"]) if k == "smile"]
    a = np.array([x for x, _ in pairs])
    b = np.array([y for _, y in pairs])
    from smile2pay.decision.au_calibration import Probes, gate, rise as rise_of

    # the product's rule on these pairs (the neutral photo is both the burst's neutral frame and the baseline),
    # as au_cross_population.py judges them; then which of its conditions each missed pair fails
    S = np.stack([F6, F12], 1).astype(np.float32)
    ok = gate(Probes("lfw_test_smiles", ("AU6", "AU12"), S[b], S[a], S[a], np.ones(len(b), bool)),
              (t6, t12), delta, absent, scale)
    peak = (S[b] >= np.float32([t6, t12])).all(1)
    neutral_ok = (S[a] < absent).all(1)
    rise = (rise_of(S[b], S[a], scale) >= delta - 1e-9).all(1)
    assert not (ok & ~(peak & neutral_ok & rise)).any()
    why = {"peak below the AU thresholds": int((~peak).sum()),
           "peak passes, neutral photo not below the absence threshold": int((peak & ~neutral_ok).sum()),
           "peak and neutral pass, rise below the required delta": int((peak & neutral_ok & ~rise).sum())}
    missed = sorted({int(i) for i in b[~peak]})
    rng = np.random.default_rng(args.seed)
    pick = sorted(rng.choice(missed, size=min(args.n, len(missed)), replace=False).tolist())
    rel = lambda p: str(p).split("/lfw/", 1)[-1]     # noqa: E731
    sample = [{"path": "lfw/" + rel(lfw["path"][i]), "fused_AU6": round(float(F6[i]), 4),
               "fused_AU12": round(float(F12[i]), 4), "fer_p_happy": round(float(happy[i]), 4),
               "morishita_smile_label": int(lfw["smile"][i])} for i in pick]
    res = {"benchmark": "au_missed_smiles", "date": time.strftime("%Y-%m-%d"),
           "command": "python benchmarks/au_missed_smiles.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "gate": {"AU6": t6, "AU12": t12, "absent": absent, "delta": delta},
           "lfw_test_smile_pairs": len(b), "passed": int(ok.sum()), "pass_rate": round(float(ok.mean()), 4),
           "why_missed_pairs_fail": why,
           "missed_smiling_photos_peak_below_threshold": len(missed),
           "morishita_labelled_share": {"missed": round(float((lfw["smile"][missed] == 1).mean()), 4),
                                        "all_smile_probes": round(float((lfw["smile"][b] == 1).mean()), 4)},
           "sample_seed": args.seed, "sample": sample}
    if AUDIT.is_file():
        audit = json.loads(AUDIT.read_text())
        labels = [audit["labels"].get(s["path"]) for s in sample]
        res["audit"] = {"by": audit.get("by"), "date": audit.get("date"), "labelled": sum(x is not None for x in labels),
                        "counts": dict(Counter(x for x in labels if x is not None))}
    if args.sheet:
        import cv2

        tiles = []
        for k, s in enumerate(sample):
            im = cv2.imread(str(Path(args.data) / s["path"]))
            im = cv2.resize(im[50:200, 50:200], (150, 150))
            cv2.putText(im, str(k), (3, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1)
            tiles.append(im)
        while len(tiles) % 6:
            tiles.append(np.zeros_like(tiles[0]))
        cv2.imwrite(args.sheet, np.vstack([np.hstack(tiles[r:r + 6]) for r in range(0, len(tiles), 6)]))
        res["sheet_written_outside_repo"] = True
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "sample"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
