"""The decision's smile judgement through the product, with and without the identity network's smile probe.

Same images, same run: every face goes through the shipped pipeline (detection, alignment, the AU stage and
the identity forward that also returns the probe's tensors, ``smile2pay.pipeline.FacePipeline``) at the
image's own resolution, and each neutral -> probe pair is judged by ``smile2pay.decision.engine.judge_frames``
as a two-frame burst (frame 0 clearly neutral, frame 1 the pattern as a change from it), once with the shipped
AU-stage policy and once with the smile-probe policy (``Policy.with_smile_probe``, the ``au_probe`` section of
the calibration file). Two protocols: the burst alone (no enrolled baseline), and **enrolled from the neutral
photo** (the baseline ``verify()`` reads for a user enrolled from that photo: its AU stage probabilities and
probe logit; the presence thresholds rise to baseline + the required rise). The offline protocol of
``au_cross_population.py`` / ``au_identity_features.py`` is the second one (its baseline is the neutral frame).

Sets: LFW test people's neutral -> smile / other-expression pairs (people never used to fit either model or
to choose an operating point) and, for reference, LFW calibration people (the operating points were chosen
on them: not a held-out figure). Each set's pairs are also split by where the probe photo's label comes from
(``smile_pairs_by_label_source`` / ``other_pairs_by_label_source``): the two LFW label sources (muxspace's crowd
expression labels, Morishita's curated smile labels) agree on some photos and not on others. Each policy also
reports the probe photo alone at its presence thresholds (``probe_photo_alone_at_the_thresholds``: no neutral frame,
no baseline, no rise), the ceiling of the presence test, and counts which conditions the declined smile pairs miss
(``declined_smile_pairs_by_condition``, the rise on the policy's own scale). ``oracle_at_2pct_others`` points the
product's own calibrator (``smile2pay.decision.au_calibration.calibrate``) at each set's pairs themselves, on the
policy's judged scores: the best any operating point of the gate's family (thresholds, rise, absence threshold) can
do there at <= 2 % of the other expressions, with the required rise above the flicker floor and with none.
It is a ceiling of the scores, not a result: no deployable threshold is chosen on the set it is judged on. The
offline figures of
``au_identity_features.py`` are on cached AU crops; this checks that the product path (the identity crop at full
resolution) gives the same gate.

    python benchmarks/smile_gate_product.py [--run results/au3] [--out benchmarks/results/smile_gate_product.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="results/au3", help="train-au run folder whose cache lists the LFW faces")
    ap.add_argument("--data", default=os.environ.get("SMILE2PAY_DATA", "../shared/data"))
    ap.add_argument("--models", default=os.environ.get("SMILE2PAY_MODELS", "../shared/models"))
    ap.add_argument("--out", default="benchmarks/results/smile_gate_product.json")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    from tqdm import tqdm

    from smile2pay.config import Settings
    from smile2pay.decision import engine
    from smile2pay.decision.policy import Policy
    from smile2pay.decision.rules import parse_rule
    from smile2pay.errors import Smile2PayError
    from smile2pay.pipeline import FacePipeline
    from smile2pay_tools.bench import au_population as ap_
    from smile2pay_tools.bench import common as C
    from smile2pay_tools.train.sources import lfw_cache

    t0 = time.time()
    lfw = lfw_cache(args.data, args.models, Path(args.run) / "cache", progress=False)
    role = lfw["role"]
    sets = {"lfw_test_people": [(a, b, k) for a, b, k in ap_.lfw_pairs(lfw, role == "test") if k in ("smile", "other")],
            "lfw_calibration_people (operating points chosen here)":
                [(a, b, k) for a, b, k in ap_.lfw_pairs(lfw, role == "calib") if k in ("smile", "other")]}
    pipe = FacePipeline(Settings.from_env(models=args.models))
    if pipe.smile_probe is None:
        raise SystemExit("this pipeline reads no smile probe (SMILE2PAY_SMILE_PROBE=0, or a pack without one)")
    plain = Policy.from_calibration(model_fingerprint=pipe.model_fingerprint)
    probe_pol = plain.with_smile_probe()
    if probe_pol is None:
        raise SystemExit("the calibration file has no au_probe section")
    rule = parse_rule("AU6+AU12")
    rows = sorted({i for pairs in sets.values() for a, b, _ in pairs for i in (a, b)})
    obs: dict[int, engine.FrameObs | None] = {}
    t_face = []
    for r in tqdm(rows, desc="faces", disable=args.no_progress, mininterval=5):
        try:
            t1 = time.perf_counter()
            f = pipe.single(str(lfw["path"][r]), pick="center", embed=True, au=True)
            t_face.append(time.perf_counter() - t1)
            obs[r] = engine.FrameObs(au_probs=dict(f.au_probs or {}), smile_probe=f.smile_probe)
        except Smile2PayError:
            obs[r] = None

    def baseline_of(a, policy, enrolled: bool):
        """The user's enrolled baseline when ``enrolled``: the neutral photo's AU stage probabilities and probe
        logit, as ``enroll`` stores them for a user enrolled from that photo, on the policy's judged scale."""
        return ap_.enrolled_baseline(obs[a], policy) if enrolled else None

    def passes(a, b, policy, enrolled: bool = False) -> bool | None:
        if obs[a] is None or obs[b] is None:
            return None
        return ap_.product_pair_passes(obs[a], obs[b], rule, policy, enrolled)

    def photo_alone(b, policy) -> bool | None:
        """The smiling photo alone at the policy's presence thresholds: no neutral frame, no baseline, no rise (the
        ceiling of the presence test; the two-frame rule can only pass fewer)."""
        if obs[b] is None:
            return None
        need, _ = engine.pattern_thresholds(rule, policy, None)
        pp = engine.judged_probs(obs[b], policy)
        if pp is None:          # not judged on this policy's scale (no probe logit): left out of the tally
            return None
        return all(pp.get(x, 0.0) >= t for x, t in need.items())

    def why_not(a, b, policy, enrolled: bool = False) -> list[str]:
        """Which conditions of the two-frame judgement a declined pair misses (several may hold)."""
        pn, pp = (engine.judged_probs(o, policy) for o in (obs[a], obs[b]))
        need, _ = engine.pattern_thresholds(rule, policy, baseline_of(a, policy, enrolled))
        req = list(rule.required)
        out = []
        if any(pp.get(x, 0.0) < need[x] for x in req):
            out.append("smile frame below the thresholds" + (" (raised to the baseline + rise)" if enrolled else ""))
        # the rise on the policy's own scale (a logit step since the 18th stop), as judge_frames judges it
        if any(pp.get(x, 0.0) < engine.raised(pn.get(x, 0.0), policy.burst_min_delta, policy.rise_scale) for x in req):
            out.append("rise over the neutral frame below the required rise")
        if not all(pn.get(x, 0.0) < policy.absent_threshold(x) for x in req):
            out.append("neutral frame not clearly neutral")
        elif all(pn.get(x, 0.0) >= need[x] for x in req):
            out.append("neutral frame already shows the pattern")
        return out or ["other"]

    def oracle(pairs, policy) -> dict:
        """The calibrator fitted on these pairs themselves, for a user enrolled from the neutral photo (see the
        module doc): a ceiling of the scores."""
        from smile2pay.decision import au_calibration as cal

        rows = []       # (neutral photo, is a smile, its judged scores, the probe photo's) of the judged pairs
        for a, b, k in pairs:
            if obs[a] is None or obs[b] is None:
                continue
            pn, pp = engine.judged_probs(obs[a], policy), engine.judged_probs(obs[b], policy)
            if pn is not None and pp is not None:
                rows.append((a, k == "smile", pn, pp))
        pr = cal.Probes.from_dicts("set itself", rule.required, [pp for *_, pp in rows], [s for _, s, _, _ in rows],
                                   neutral=[pn for _, _, pn, _ in rows],
                                   baseline=[baseline_of(a, policy, True) for a, *_ in rows])
        grid = tuple(np.round(np.arange(0.0, 0.951, 0.05), 2))
        out = {}
        for name, kw in (("with the required rise (flicker floor)", {}),
                         ("no required rise (delta 0, no absence threshold)",
                          {"min_delta": 0.0, "grid_delta": (0.0,), "grid_absent": (1.01,)})):
            try:
                r = cal.calibrate([pr], max_fpr=0.02, grid_t=grid, rise_scale=policy.rise_scale, **kw)
            except ValueError as e:
                out[name] = {"error": str(e)}
                continue
            rr = r["populations"]["set itself"]
            out[name] = {"smiles_passed": round(rr["tpr"], 4), "others_passed": round(rr["fpr"], 4),
                         "thresholds": r["thresholds"], "delta": r["delta"], "absent_threshold": r["absent_threshold"]}
        return out

    res = {"benchmark": "smile_gate_product", "date": time.strftime("%Y-%m-%d"),
           "command": "python benchmarks/smile_gate_product.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "policy": {"au_stage": plain.version, "probe_weight": probe_pol.probe_weight,
                      "probe_thresholds": probe_pol.au_thresholds, "probe_delta": probe_pol.burst_min_delta,
                      "probe_model": (plain.probe_calibration or {}).get("model")},
           "faces": len(rows), "faces_without_a_usable_face": int(sum(v is None for v in obs.values())),
           "sets": {}}
    for name, pairs in sets.items():
        ent = {}
        for label, pol, enrolled in (("au_stage_alone (shipped before)", plain, False),
                                     ("with_smile_probe", probe_pol, False),
                                     ("au_stage_alone, enrolled from the neutral photo", plain, True),
                                     ("with_smile_probe, enrolled from the neutral photo", probe_pol, True)):
            verdict = [passes(a, b, pol, enrolled) for a, b, _ in pairs]   # judged once per pair

            def tally(kind, keep=lambda b: True):
                got = [v for v, (_, b, k) in zip(verdict, pairs) if k == kind and keep(b) and v is not None]
                return {"pairs": len(got), "passed": int(sum(got)),
                        "rate": round(float(np.mean(got)), 4) if got else None}

            s, o = tally("smile"), tally("other")
            ent[label] = {"smile_pairs": s["pairs"], "other_pairs": o["pairs"],
                          "smiles_passed": s["rate"], "others_passed": o["rate"]}
            # the smile pairs by where the smiling photo's label comes from: Morishita's curated binary smile
            # label, or only muxspace's crowd "happiness" (lfw_expression uses Morishita's where it exists)
            ent[label]["smile_pairs_by_label_source"] = {
                "both_sources_smile": tally("smile", lambda b: lfw["smile"][b] == 1 and lfw["label"][b] == "happiness"),
                "morishita_smile_muxspace_not_happiness":
                    tally("smile", lambda b: lfw["smile"][b] == 1 and lfw["label"][b] != "happiness"),
                "muxspace_happiness_only (no Morishita label)": tally("smile", lambda b: lfw["smile"][b] < 0)}
            # the other-expression pairs: muxspace's label, and whether Morishita's curated label calls it a smile
            ent[label]["other_pairs_by_label_source"] = {
                "morishita_not_smile_or_unlabelled": tally("other", lambda b: lfw["smile"][b] != 1),
                "morishita_smile (the two sources disagree)": tally("other", lambda b: lfw["smile"][b] == 1)}
            alone = [photo_alone(b, pol) if obs[a] is not None else None for a, b, _ in pairs]
            ent[label]["probe_photo_alone_at_the_thresholds"] = {
                k + "s_passed": round(float(np.mean(got)), 4) if got else None
                for k in ("smile", "other")
                for got in [[v for v, (_, _, kk) in zip(alone, pairs) if kk == k and v is not None]]}
            missed: dict[str, int] = {}
            for v, (a, b, k) in zip(verdict, pairs):
                if k == "smile" and v is False:
                    for w in why_not(a, b, pol, enrolled):
                        missed[w] = missed.get(w, 0) + 1
            ent[label]["declined_smile_pairs_by_condition"] = missed
            if enrolled:
                ent[label]["oracle_at_2pct_others"] = oracle(pairs, pol)
            # which other-expression pairs pass (file names and the probe photo's expression label; no image data)
            ent[label]["other_pairs_passed"] = [
                {"neutral": Path(str(lfw["path"][a])).name, "probe": Path(str(lfw["path"][b])).name,
                 "probe_label": str(lfw["label"][b]), "smile_label_morishita": int(lfw["smile"][b])}
                for v, (a, b, k) in zip(verdict, pairs) if k == "other" and v]
        res["sets"][name] = ent
        print(name, json.dumps(ent), flush=True)
    res["seconds_per_face_median"] = round(float(np.median(t_face)), 4) if t_face else None
    res["seconds"] = round(time.time() - t0, 1)
    C.write_json(args.out, res)
    return res


if __name__ == "__main__":
    main()
