"""Simulated deployments: does the identity threshold keep its promised FAR on every population?

    python benchmarks/identity_deployments.py [--sizes 10 100 1000] [--populations lfw ckplus ferplus lfw+ckplus ...]

A deployment is a gallery of ``n`` users drawn from a population (one enrolment image each: a
neutral one where the data says which). Its claims are every other image of the population against
every enrolled user: impostor claims when the image is of someone else, genuine claims when it is of
that user. Enrolment images are never probes. Three thresholds per FAR, same claims, same run:

* ``shipped``: the calibration file's global threshold (strictest reference population);
* ``self``: :func:`smile2pay.decision.population.estimate` on the gallery's own templates only (no
  labels: every enrolled user is a different person);
* ``oracle``: the population's own threshold from all its labelled impostor pairs (what a full
  calibration on this population would give; not available to a deployment).

Mixtures (``lfw+ckplus``) are balanced: each part keeps whole subjects up to the smallest part's image
count, and users are drawn evenly from each part. FER+ has no subject ids: each image is its own
person, so FER+ has no genuine claims and its impostor rates are pessimistic (the same person in two
photos counts as an impostor). Also reported: how the self-calibrated threshold settles as the
gallery grows (``--sweep``).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from smile2pay.decision.population import estimate
from smile2pay.metrics.tail import empirical_threshold, tail_shape
from smile2pay.metrics.verification import clopper_pearson

from . import common as C
from .populations import Population, embed_population, load_population

log = logging.getLogger("smile2pay_tools.bench.deployments")
FARS = (1e-3, 1e-4)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--populations", nargs="+", default=["lfw", "ckplus", "ferplus", "lfw+ckplus", "lfw+ferplus", "lfw+ckplus+ferplus"])
    p.add_argument("--sizes", nargs="+", type=int, default=[10, 100, 1000])
    p.add_argument("--reps", nargs="+", type=int, default=None,
                   help="repetitions per size (default: 20 for < 100 users, 10 for < 1000, 4 above)")
    p.add_argument("--sweep", nargs="*", type=int, default=[10, 30, 50, 100, 300, 1000],
                   help="gallery sizes for the 'users needed' curve (empty: skip)")
    p.add_argument("--ferplus-n", type=int, default=3000)
    p.add_argument("--calibration", help="calibration file (default: the shipped mobile.json)")
    p.add_argument("--write-calibration", metavar="FILE",
                   help="write the LFW + CK+ reference tail shape into this calibration file's identity section")
    p.add_argument("--out", default="benchmarks/results/identity_deployments.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")


def _load(names, pipe, data_dir, ferplus_n, progress) -> dict[str, tuple[Population, np.ndarray]]:
    out = {}
    for name in names:
        pop = load_population(name, data_dir, ferplus_n=ferplus_n)
        emb, found = embed_population(pipe, pop, data_dir, show_progress=progress)
        keep = found
        pop = Population(pop.name, [p for p, k in zip(pop.paths, keep) if k], pop.subjects[keep],
                         pop.neutral[keep], pop.has_ids)
        out[name] = (pop, emb[keep])
    return out


def _impostor_scores(emb: np.ndarray, subjects: np.ndarray, block: int = 1024) -> np.ndarray:
    """All cross-subject image pairs' scores (each pair once), computed by row blocks."""
    _, sid = np.unique(subjects, return_inverse=True)
    out = []
    for i in range(0, len(emb), block):
        sim = emb[i:i + block] @ emb[i:].T
        r = np.arange(sim.shape[0])[:, None]
        c = np.arange(sim.shape[1])[None, :]
        m = (c > r) & (sid[i:i + block][:, None] != sid[i:][None, :])
        out.append(sim[m])
    return np.concatenate(out)


def _mix(parts: list[tuple[Population, np.ndarray]], rng) -> tuple[Population, np.ndarray]:
    """A balanced mixture: each part keeps a seeded sample of whole subjects up to the smallest part's
    image count, so users, their probes and the impostor claims all come evenly from each part."""
    paths, subj, neu, embs, sizes = [], [], [], [], []
    cap = min(len(e) for _, e in parts)
    for pop, e in parts:
        if len(e) > cap:
            keep = np.zeros(len(e), bool)
            for s in rng.permutation(np.unique(pop.subjects)):
                m = pop.subjects == s
                if keep.sum() + m.sum() > cap:
                    continue
                keep |= m
            pop = Population(pop.name, [p for p, k in zip(pop.paths, keep) if k], pop.subjects[keep],
                             pop.neutral[keep], pop.has_ids)
            e = e[keep]
        paths += pop.paths
        subj += [f"{pop.name}:{s}" for s in pop.subjects]
        neu.append(pop.neutral)
        embs.append(e)
        sizes.append(len(e))
    return (Population("+".join(p.name for p, _ in parts), paths, np.array(subj), np.concatenate(neu),
                       all(p.has_ids for p, _ in parts)), np.concatenate(embs), sizes)


def _draw(pop: Population, n_per: list[int], groups: list[np.ndarray], rng) -> np.ndarray | None:
    """Enrolment image index per drawn user: ``n_per[g]`` subjects from each group (subjects with a
    second image first, so that genuine claims exist), a neutral image of each where labelled."""
    enrol = []
    for n, g in zip(n_per, groups):
        subj, inv = np.unique(pop.subjects[g], return_inverse=True)
        if len(subj) < n:
            return None
        order = np.argsort(inv, kind="stable")
        members = np.split(g[order], np.cumsum(np.bincount(inv))[:-1])
        multi = [k for k, m in enumerate(members) if len(m) >= 2]
        single = [k for k, m in enumerate(members) if len(m) < 2]
        take = list(rng.choice(multi, min(n, len(multi)), replace=False)) if multi else []
        if len(take) < n:
            take += list(rng.choice(single, n - len(take), replace=False))
        for k in take:
            idx = members[k]
            neu = idx[pop.neutral[idx]]
            enrol.append(int(rng.choice(neu if len(neu) else idx)))
    return np.array(enrol)


def _claims(pop: Population, emb: np.ndarray, enrol: np.ndarray, thresholds: dict[str, float]) -> dict:
    probe = np.ones(len(emb), bool)
    probe[enrol] = False
    pidx = np.where(probe)[0]
    sim = emb[enrol] @ emb[pidx].T                                  # (users, probes)
    same = pop.subjects[enrol][:, None] == pop.subjects[pidx][None, :]
    imp, gen = sim[~same], sim[same]
    out = {"impostor_claims": int(imp.size), "genuine_claims": int(gen.size)}
    for k, t in thresholds.items():
        out[k] = {"threshold": float(t), "false_accepts": int((imp >= t).sum()),
                  "genuine_accepts": int((gen >= t).sum())}
    return out


def _summarise(rows: list[dict], far: float) -> dict:
    res = {"deployments": len(rows), "far": far}
    n_imp = sum(r["impostor_claims"] for r in rows)
    n_gen = sum(r["genuine_claims"] for r in rows)
    res["impostor_claims"], res["genuine_claims"] = n_imp, n_gen
    for k in ("shipped", "self", "oracle"):
        fa = sum(r[k]["false_accepts"] for r in rows)
        ga = sum(r[k]["genuine_accepts"] for r in rows)
        fars = [r[k]["false_accepts"] / max(r["impostor_claims"], 1) for r in rows]
        lo, hi = clopper_pearson(fa, n_imp) if n_imp else (float("nan"), float("nan"))
        ts = [r[k]["threshold"] for r in rows]
        res[k] = {"far": fa / n_imp if n_imp else None, "far_ci95": [lo, hi], "false_accepts": fa,
                  "far_max_deployment": max(fars) if fars else None,
                  "tar": ga / n_gen if n_gen else None, "genuine_accepts": ga,
                  "threshold_median": float(np.median(ts)), "threshold_range": [float(min(ts)), float(max(ts))]}
        res[k]["meets_far"] = bool(res[k]["far"] is not None and res[k]["far"] <= 1e-3 and lo <= 3 * far)
    return res


def _reps(n: int, given) -> int:
    if given:
        return given
    return 20 if n < 100 else (10 if n < 1000 else 4)


def run(args) -> dict:
    from smile2pay.config import data_dir
    from smile2pay.decision.policy import CALIBRATION_DIR, Policy, load_calibration

    t0 = time.perf_counter()
    progress = not args.no_progress
    cal_path = Path(args.calibration) if args.calibration else CALIBRATION_DIR / "mobile.json"
    base = sorted({p for spec in args.populations for p in spec.split("+")} | {"lfw", "ckplus"})
    pipe = C.make_pipeline(getattr(args, "models", None), threads=1)
    data = _load(base, pipe, data_dir(), args.ferplus_n, progress)
    oracle = {}
    for name, (pop, emb) in data.items():
        imp = _impostor_scores(emb, pop.subjects)
        oracle[name] = {"impostor_pairs": int(imp.size), "shape": tail_shape(imp, FARS),
                        "threshold": {f"{f:g}": empirical_threshold(imp, f) for f in FARS}}
    if args.write_calibration:
        from smile2pay.decision.policy import write_calibration

        from .calibrate import tail_shape_section

        out_cal = Path(args.write_calibration)
        cal = json.loads(out_cal.read_text())
        shapes = {n: oracle[n]["shape"] for n in ("lfw", "ckplus")}
        cal["identity"]["tail_shape"] = tail_shape_section(shapes, FARS)
        cal["identity"]["tail_shape"]["command"] = ("python benchmarks/identity_deployments.py "
                                                   f"--write-calibration {args.write_calibration}")
        write_calibration(out_cal, cal)
        load_calibration(out_cal)
    policies = {f: Policy.from_calibration(cal_path, far=f) for f in FARS}
    for f, pol in policies.items():
        if pol.identity_tail_z is None:
            from smile2pay.errors import RequestError

            raise RequestError(f"{cal_path} has no identity.tail_shape; run with --write-calibration",
                               code="CALIBRATION_INVALID")
    rng = np.random.default_rng(args.seed)
    mixtures = {}
    for spec in args.populations:
        parts = [data[p] for p in spec.split("+")]
        if len(parts) == 1:
            mixtures[spec] = (parts[0][0], parts[0][1], [np.arange(len(parts[0][1]))])
        else:
            pop, emb, sizes = _mix(parts, rng)
            off = np.cumsum([0] + sizes)
            mixtures[spec] = (pop, emb, [np.arange(off[i], off[i + 1]) for i in range(len(sizes))])
    results, sweep = {}, {}
    specs = [(spec, n) for spec in args.populations for n in args.sizes]
    for spec, n in C.progress(specs, "deployments", enabled=progress):
        pop, emb, groups = mixtures[spec]
        n_parts = len(groups)
        n_per = [n // n_parts + (1 if i < n % n_parts else 0) for i in range(n_parts)]
        # the mixture's own labelled threshold: all its impostor pairs (oracle)
        if spec not in oracle:
            imp = _impostor_scores(emb, pop.subjects)
            oracle[spec] = {"impostor_pairs": int(imp.size), "shape": tail_shape(imp, FARS),
                            "threshold": {f"{f:g}": empirical_threshold(imp, f) for f in FARS}}
            del imp
        orc = oracle[spec]["threshold"]
        rows = {f: [] for f in FARS}
        ests = {f: [] for f in FARS}
        reps = _reps(n, args.reps[args.sizes.index(n)] if args.reps else None)
        skipped = None
        for r in range(reps):
            enrol = _draw(pop, n_per, groups, rng)
            if enrol is None:
                skipped = f"the population has fewer than {n} subjects"
                break
            for f in FARS:
                pol = policies[f]
                est = estimate(emb[enrol], np.arange(len(enrol)), far=f, shipped=pol.identity_threshold,
                               floor=pol.identity_floor, z=pol.identity_tail_z, seed=int(rng.integers(1 << 31)))
                ests[f].append(est.to_dict())
                rows[f].append(_claims(pop, emb, enrol, {"shipped": pol.identity_threshold, "self": est.threshold,
                                                          "oracle": orc[f"{f:g}"]}))
        key = f"{spec}/{n}"
        if skipped:
            results[key] = {"skipped": skipped}
            continue
        results[key] = {"population": spec, "users": n, "has_genuine": pop.has_ids or spec != "ferplus",
                        **{f"far={f:g}": _summarise(rows[f], f) for f in FARS}}
        for f in FARS:
            results[key][f"far={f:g}"]["estimate_median"] = float(np.median([e["estimate"] or np.nan for e in ests[f]]))
            results[key][f"far={f:g}"]["bound_median"] = float(np.median([e["bound"] for e in ests[f]]))
            results[key][f"far={f:g}"]["method"] = ests[f][0]["method"] or ests[f][0]["note"]
    if args.sweep:
        for spec in args.populations:
            pop, emb, groups = mixtures[spec]
            curve = []
            for n in args.sweep:
                n_per = [n // len(groups) + (1 if i < n % len(groups) else 0) for i in range(len(groups))]
                ts = []
                for r in range(5):
                    enrol = _draw(pop, n_per, groups, rng)
                    if enrol is None:
                        break
                    pol = policies[1e-4]
                    ts.append(estimate(emb[enrol], np.arange(len(enrol)), far=1e-4, shipped=pol.identity_threshold,
                                       floor=pol.identity_floor, z=pol.identity_tail_z,
                                       seed=int(rng.integers(1 << 31))))
                if ts:
                    curve.append({"users": n, "estimate_median": float(np.median([t.estimate for t in ts])),
                                  "bound_median": float(np.median([t.bound for t in ts])),
                                  "threshold_median": float(np.median([t.threshold for t in ts]))})
            sweep[spec] = curve
    payload = {"benchmark": "identity_deployments", "date": time.strftime("%Y-%m-%d"),
               "command": "python benchmarks/identity_deployments.py " + " ".join(
                   f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                   for k, v in vars(args).items() if k in ("populations", "sizes", "sweep", "ferplus_n", "seed")),
               "calibration": str(cal_path), "model": pipe.model_fingerprint,
               "populations": {k: {"images": len(v[0].paths), "subjects": int(len(np.unique(v[0].subjects))),
                                   "has_ids": v[0].has_ids} for k, v in data.items()},
               "oracle": oracle,
               "policy": {f"{f:g}": {"shipped": p.identity_threshold, "floor": p.identity_floor,
                                     "z": p.identity_tail_z} for f, p in policies.items()},
               "deployments": results, "users_needed_far=1e-4": sweep, "machine": C.machine(),
               "seconds": round(time.perf_counter() - t0, 1)}
    C.write_json(args.out, payload)
    return payload


def summary(res: dict) -> str:
    lines = [f"identity deployments ({res['date']}, {res['calibration']})",
             f"{'deployment':<26}{'FAR':>7} | {'shipped FAR':>12}{'TAR':>8} | {'self FAR':>12}{'TAR':>8}{'thr':>7}"
             f" | {'oracle FAR':>11}{'TAR':>8}{'thr':>7}"]
    for key, r in res["deployments"].items():
        if "skipped" in r:
            lines.append(f"{key:<26} skipped: {r['skipped']}")
            continue
        for f in FARS:
            s = r[f"far={f:g}"]

            def cell(k):
                x = s[k]
                tar = f"{x['tar']:.4f}" if x["tar"] is not None else "   -  "
                return f"{x['far']:>12.2e}{tar:>8}"
            lines.append(f"{key:<26}{f:>7g} | {cell('shipped')} | {cell('self')}{s['self']['threshold_median']:>7.3f}"
                         f" | {cell('oracle')[1:]}{s['oracle']['threshold_median']:>7.3f}")
    for spec, curve in res.get("users_needed_far=1e-4", {}).items():
        lines.append(f"users needed ({spec}, FAR 1e-4): " + ", ".join(
            f"{c['users']}: est {c['estimate_median']:.3f} bound {c['bound_median']:.3f}" for c in curve))
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    configure(p)
    p.add_argument("--models")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    res = run(args)
    print(summary(res))
    print(f"wrote {args.out}")
