"""Would a PAD head learned on the attacks built here fix what the MiniFASNet pair misses? A leave-one-species-out
test, with capture styles held out too.

Usage:
    python benchmarks/pad_texture_head.py [--lfw 800] [--ferplus 500] [--seed 0] [--C 0.1]
                                          [--out benchmarks/results/pad_texture_head.json]

The idea tried: texture PAD in the style of colour-LBP detectors (uniform LBP(8,1) histograms of the Y, Cr, Cb,
H, S and V channels of a 1.2x face crop at 96x96, 354 numbers) plus the crop's radial power spectrum (12 bands),
a few colour statistics (luma percentiles, chroma and saturation mean and spread: lifted blacks and gamut show
there) and the six log-softmax outputs of the two MiniFASNet models. A logistic regression (standardised features,
balanced classes, L2 ``--C``) learns bona fide vs attack. The decision threshold is the 5 % BPCER point of the
pooled bona fide training faces.

Data (all simulated from stills with :mod:`smile2pay_tools.bench.pad_attacks`'s generators, in memory only):

* populations: LFW (the pad_attacks benchmark's person halves: ``lfw_calib`` trains, ``lfw_test`` is reported),
  CK+ (``ckplus_neutral_peak48``, split by subject, seeded) and FER+ (FER2013Test, deduplicated, split by
  image, positions 0-1 of every 4); ``samples`` (insightface and deepface photos) never trains: a held-out population;
* bona fide capture styles: ``file`` (LFW and samples only: a 48 px face is too small for PAD), ``canvas``
  (upscaled onto a 640x480 canvas with sensor noise, as the stream benchmarks show faces), ``live`` (the still as
  the scene in front of the simulated till camera, :func:`~smile2pay_tools.bench.pad_attacks.live_frame`);
* attack species used for training: ``print`` (halftone), ``print_photo`` (continuous tone), ``screen_replay``
  (sub-pixels and moire), ``screen_hidpi`` (neither), made from every LFW face and from every second CK+ and FER+
  face (enlarged 4x first, as a print or phone shows a small photo); ``cutout_mask`` (LFW) never trains.

Folds: the head is trained on all four species (``none`` held out) and then once with each species held out.
The features are cached under ``--cache`` (numbers only, no images); ``--no-cache`` recomputes them.

A held-out species' APCER is what the head does against an instrument it was not shown; the ``none`` fold's
APCER on the species it was shown (other people, same generator) is an upper bound on its value, not a claim.
The MiniFASNet pair alone (averaged p_real, thresholded the same way on the same bona fide training faces) is
reported beside it, same faces, same run.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from smile2pay.vision.track import box_iou

from . import common as C
from . import pad_attacks as P

log = logging.getLogger("smile2pay_tools.bench.pad_texture_head")

TRAIN_SPECIES = ("print", "print_photo", "screen_replay", "screen_hidpi")
UNTRAINED_SPECIES = ("cutout_mask",)
POPULATIONS = ("lfw", "ckplus", "ferplus")
BPCER_TARGET = 0.05
RULES = {"lfw_live": "the training people's LFW live-camera faces, for every scorer",
         "pooled": "all bona fide training faces (LFW file, canvas, live; CK+ and FER+ canvas, live)"}


# ============================================================================ features
def _uniform_lbp_map() -> np.ndarray:
    m = np.full(256, 58, np.int64)
    k = 0
    for c in range(256):
        bits = [(c >> i) & 1 for i in range(8)]
        if sum(bits[i] != bits[(i + 1) % 8] for i in range(8)) <= 2:
            m[c] = k
            k += 1
    return m


_LBP_MAP = _uniform_lbp_map()
_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


def lbp_histogram(channel: np.ndarray) -> np.ndarray:
    """Normalised 59-bin uniform LBP(8,1) histogram of one uint8 channel (interior pixels)."""
    ch = np.asarray(channel, np.int16)
    c = ch[1:-1, 1:-1]
    code = np.zeros(c.shape, np.int64)
    h, w = ch.shape
    for i, (dy, dx) in enumerate(_NEIGHBOURS):
        code |= (ch[1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx] >= c).astype(np.int64) << i
    hist = np.bincount(_LBP_MAP[code].ravel(), minlength=59).astype(np.float64)
    return hist / max(hist.sum(), 1.0)


def radial_spectrum(grey: np.ndarray, bands: int = 12) -> np.ndarray:
    """Log share of the (Hann-windowed) power in ``bands`` radial frequency bands, 0.05-1 of Nyquist."""
    g = np.asarray(grey, np.float64)
    g = g - g.mean()
    win = np.hanning(g.shape[0])[:, None] * np.hanning(g.shape[1])[None]
    power = np.abs(np.fft.fftshift(np.fft.fft2(g * win))) ** 2
    yy, xx = np.mgrid[:g.shape[0], :g.shape[1]]
    r = np.hypot(yy - g.shape[0] / 2, xx - g.shape[1] / 2) / (g.shape[0] / 2)
    edges = np.linspace(0.05, 1.0, bands + 1)
    e = np.array([power[(r >= a) & (r < b)].sum() for a, b in zip(edges[:-1], edges[1:])])
    return np.log(e / max(e.sum(), 1e-12) + 1e-12)


def colour_stats(crop: np.ndarray) -> np.ndarray:
    ycc = cv2.cvtColor(crop, cv2.COLOR_BGR2YCrCb).reshape(-1, 3).astype(np.float64)
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV).reshape(-1, 3).astype(np.float64)
    return np.r_[np.percentile(ycc[:, 0], [1, 5, 50, 95, 99]), ycc[:, 1:].mean(0), ycc[:, 1:].std(0),
                 hsv[:, 1].mean(), hsv[:, 1].std()]


def face_crop(img: np.ndarray, box, k: float = 1.2, size: int = 96) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    a = size / (k * max(x2 - x1, y2 - y1))
    M = np.array([[a, 0, size / 2 - cx * a], [0, a, size / 2 - cy * a]])
    return cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def texture_features(crop: np.ndarray) -> np.ndarray:
    ycc = cv2.cvtColor(crop, cv2.COLOR_BGR2YCrCb)
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
    lbp = [lbp_histogram(ycc[..., c]) for c in range(3)] + [lbp_histogram(hsv[..., c]) for c in range(3)]
    return np.concatenate(lbp + [radial_spectrum(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)), colour_stats(crop)])


def per_model_probs(pad, img: np.ndarray, box) -> np.ndarray:
    """The two models' softmaxes side by side (6 numbers)."""
    return pad.model_probabilities(img, np.asarray(box, np.float64)[None, :4])[0].reshape(-1).astype(np.float64)


# ============================================================================ collection
class Collector:
    def __init__(self, pipe, pad):
        self.pipe, self.pad = pipe, pad
        self.rows: dict[tuple[str, str, bool], list[np.ndarray]] = {}
        self.probs: dict[tuple[str, str, bool], list[np.ndarray]] = {}
        self.no_face: dict[tuple[str, str, bool], int] = {}

    def add(self, key, frame: np.ndarray, expect_box=None, largest: bool = False) -> None:
        d = self.pipe.detect(frame)
        if not len(d):
            self.no_face[key] = self.no_face.get(key, 0) + 1
            return
        if expect_box is not None:
            ious = [box_iou(b, expect_box) for b in d.boxes]
            j = int(np.argmax(ious)) if max(ious) >= 0.3 else P.pick_largest(d.boxes)
        else:
            j = P.pick_largest(d.boxes) if largest else P.pick_center(d.boxes, frame.shape)
        box = d.boxes[j]
        pr = per_model_probs(self.pad, frame, box)
        f = np.concatenate([np.log(np.clip(pr, 1e-6, 1.0)), texture_features(face_crop(frame, box))])
        self.rows.setdefault(key, []).append(f)
        self.probs.setdefault(key, []).append(pr)

    def X(self, key) -> np.ndarray:
        return np.asarray(self.rows.get(key, []), np.float64)

    def p_real(self, key) -> np.ndarray:
        p = np.asarray(self.probs.get(key, []), np.float64).reshape(-1, 6)
        return (p[:, 1] + p[:, 4]) / 2


def collect(args, pipe, pad) -> tuple[Collector, dict]:
    from .clips import compose

    data = Path(args.data)
    sets = P.load_sets(data, args.lfw, args.ferplus, args.seed)
    dets, _ = C.detect_all(pipe, [p for v in sets.values() for p in v], data, "pad-bona", desc="detect stills",
                           use_cache=not args.no_cache, cache_dir=Path(args.cache), show_progress=not args.quiet)
    ck_subject = {p: Path(p).name.split("_")[0] for p in sets["ckplus"]}
    subjects = sorted(set(ck_subject.values()))
    order = np.random.default_rng([args.seed, 1]).permutation(len(subjects))
    ck_train = {subjects[i] for i in order[:len(subjects) // 2]}
    plan = []   # (population, rel, train?, index)
    for pop, rels in (("lfw", sets["lfw_calib"]), ("lfw", sets["lfw_test"])):
        for i, rel in enumerate(rels):
            plan.append((pop, rel, rels is sets["lfw_calib"], i))
    for i, rel in enumerate(sets["ckplus"]):
        plan.append(("ckplus", rel, ck_subject[rel] in ck_train, i))
    for i, rel in enumerate(sets["ferplus"]):
        plan.append(("ferplus", rel, (i // 2) % 2 == 0, i))   # pairs of positions: attacks come from even ones
    for i, rel in enumerate(sets["samples"]):
        plan.append(("samples", rel, False, i))
    col = Collector(pipe, pad)
    lfw_faces = {True: [], False: []}
    for n, (pop, rel, train, i) in enumerate(C.progress(plan, "bona fide and attacks", enabled=not args.quiet)):
        rec = dets[rel]
        if rec.get("error") or not len(rec.get("scores", [])):
            continue
        img = pipe.load(str(data / rel))
        boxes = np.asarray(rec["boxes"], np.float64)
        j = P.pick_largest(boxes) if pop == "samples" else P.pick_center(boxes, img.shape)
        box, lm = boxes[j], np.asarray(rec["landmarks"][j], np.float64)
        salt = [args.seed, 77, n]
        if pop in ("lfw", "samples"):
            col.add((pop, "file", train), img, largest=(pop == "samples"))
        rng = np.random.default_rng(salt + [0])
        fr = compose(img).astype(np.float32)
        fr = np.clip(fr + rng.normal(0.0, 2.0, fr.shape), 0, 255).astype(np.uint8)
        col.add((pop, "canvas", train), fr, largest=(pop == "samples"))
        col.add((pop, "live", train), P.live_frame(img, np.random.default_rng(salt + [1])), largest=(pop == "samples"))
        if pop == "samples" or (pop != "lfw" and i % 2):
            continue
        src, sbox = img, box[:4]
        if pop != "lfw":     # a 48 px face is shown enlarged on paper or a phone
            src, sbox = cv2.resize(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img, None, fx=4,
                                   fy=4, interpolation=cv2.INTER_CUBIC), sbox * 4
        for si, sp in enumerate(TRAIN_SPECIES):
            att, exp_box = P.make_attack(sp, src, sbox, np.random.default_rng(salt + [2 + si]))
            col.add((pop, sp, train), att, expect_box=exp_box)
        if pop == "lfw":
            lfw_faces[train].append((img, box, lm))
    # cut-out masks (LFW test only; never trained on): the victim's printed face over another test person's
    faces = lfw_faces[False]
    for i, (img, box, lm) in enumerate(faces):
        rng = np.random.default_rng([args.seed, 78, i])
        wimg, wbox, wlm = faces[(i + 1 + int(rng.integers(len(faces) - 1))) % len(faces)]
        att, exp_box = P.attack_cutout(img, lm, wimg, wlm, wbox, rng)
        col.add(("lfw", "cutout_mask", False), att, expect_box=exp_box)
    info = {"ckplus_train_subjects": len(ck_train), "ckplus_subjects": len(subjects)}
    return col, info


# ============================================================================ evaluation
BONA_STYLES = {"lfw": ("file", "canvas", "live"), "ckplus": ("canvas", "live"), "ferplus": ("canvas", "live")}


def evaluate(col: Collector, C_reg: float) -> dict:
    """Per scorer and threshold rule: BPCER per bona fide style and APCER per species on the test split.

    Rules: ``pooled`` = BPCER 5 % on all bona fide training faces; ``lfw_live`` = BPCER 5 % on the training
    people's LFW live-camera faces (the style nearest a colour till camera), the same rule for every scorer;
    ``shipped`` (the pair only) = :data:`smile2pay.vision.pad.DEFAULT_THRESHOLD`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from smile2pay.vision.pad import DEFAULT_THRESHOLD

    bona_train = [(p, s, True) for p in POPULATIONS for s in BONA_STYLES[p]]
    bona_test = [(p, s, False) for p in POPULATIONS for s in BONA_STYLES[p]] + \
                [("samples", s, False) for s in ("file", "canvas", "live")]
    att_test = [(p, sp, False) for p in POPULATIONS for sp in TRAIN_SPECIES] + [("lfw", "cutout_mask", False)]
    name = lambda k: f"{k[0]}.{k[1]}"  # noqa: E731

    def block(score, t):
        out = {"threshold": round(float(t), 6), "bpcer": {}, "apcer": {}}
        for k in bona_test:
            s = score(k)
            out["bpcer"][name(k)] = P.rate(s < t) if len(s) else P.rate([])
        for k in att_test:
            s = score(k)
            out["apcer"][name(k)] = P.rate(s >= t) if len(s) else P.rate([])
        return out

    def rules(score, extra=None):
        pooled = np.concatenate([score(k) for k in bona_train])
        out = {"pooled": block(score, P.threshold_at_bpcer(pooled, BPCER_TARGET)),
               "lfw_live": block(score, P.threshold_at_bpcer(score(("lfw", "live", True)), BPCER_TARGET))}
        if extra is not None:
            out["shipped"] = block(score, extra)
        return out

    res = {"minifasnet_pair": rules(col.p_real, DEFAULT_THRESHOLD)}
    for held in ("none",) + TRAIN_SPECIES:
        shown = [sp for sp in TRAIN_SPECIES if sp != held]
        Xb = np.concatenate([col.X(k) for k in bona_train])
        Xa = np.concatenate([col.X((p, sp, True)) for p in POPULATIONS for sp in shown])
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C_reg, max_iter=5000, class_weight="balanced"))
        clf.fit(np.r_[Xb, Xa], np.r_[np.ones(len(Xb)), np.zeros(len(Xa))])
        score = lambda k, clf=clf: clf.decision_function(col.X(k)) if len(col.X(k)) else np.zeros(0)  # noqa: E731
        b = rules(score)
        b["species_shown"] = shown
        b["training_faces"] = {"bona_fide": int(len(Xb)), "attacks": int(len(Xa))}
        res[f"head_held_out_{held}"] = b
    return res


def summary(res: dict, rule: str = "lfw_live") -> dict:
    """At one threshold rule: per species, the pair's APCER, the head's when the species was shown (other
    people) and when it was held out; per bona fide style, BPCER of the pair and of the head."""
    ev = res["evaluation"]
    full = ev["head_held_out_none"][rule]
    out = {"rule": rule, "apcer": {}, "bpcer": {}}
    for k, r in ev["minifasnet_pair"][rule]["apcer"].items():
        sp = k.split(".", 1)[1]
        held = ev[f"head_held_out_{sp}"][rule] if sp in TRAIN_SPECIES else full
        out["apcer"][k] = {"minifasnet_pair": r["rate"], "head_species_shown": full["apcer"][k]["rate"],
                           "head_species_held_out": held["apcer"][k]["rate"]}
    for k, r in ev["minifasnet_pair"][rule]["bpcer"].items():
        out["bpcer"][k] = {"minifasnet_pair": r["rate"], "head": full["bpcer"][k]["rate"],
                           "head_worst_fold": max(ev[f"head_held_out_{h}"][rule]["bpcer"][k]["rate"] or 0.0
                                                  for h in ("none",) + TRAIN_SPECIES)}
    return out


def table(res: dict) -> str:
    lines = []
    for rule, s in res["summary"].items():
        lines += _table(s) + [""]
    return "\n".join(lines)


def _table(s: dict) -> list[str]:
    f = lambda v, w=6: "n/a".rjust(w) if v is None else f"{v:{w}.3f}"  # noqa: E731
    lines = [f"threshold rule {s['rule']!r} (BPCER 5 % on {RULES[s['rule']]})",
             "APCER (attacks accepted) on the test split   pair   head:shown  head:held-out"]
    for k, r in s["apcer"].items():
        lines.append(f"  {k:28s} {f(r['minifasnet_pair'], 7)} {f(r['head_species_shown'], 10)} "
                     f"{f(r['head_species_held_out'], 12)}")
    lines.append("BPCER (bona fide rejected) on the test split  pair   head   head worst fold")
    for k, r in s["bpcer"].items():
        lines.append(f"  {k:28s} {f(r['minifasnet_pair'])} {f(r['head'])} {f(r['head_worst_fold'])}")
    return lines


def run(args) -> dict:
    from smile2pay.vision.pad import PresentationAttackDetector

    t0 = time.perf_counter()
    pipe = C.make_pipeline(args.models)
    pad = PresentationAttackDetector.from_pipeline(pipe)
    import pickle

    key = f"pad_texture_head-s{args.seed}-l{args.lfw}-f{args.ferplus}.pkl"
    cache = Path(args.cache) / key
    if not args.no_cache and cache.exists():
        with open(cache, "rb") as fh:
            rows, probs, no_face, info = pickle.load(fh)
        col = Collector(pipe, pad)
        col.rows, col.probs, col.no_face = rows, probs, no_face
    else:
        col, info = collect(args, pipe, pad)
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(cache, "wb") as fh:      # features only (no images); under the git-ignored results/
            pickle.dump((col.rows, col.probs, col.no_face, info), fh)
    t_col = time.perf_counter() - t0
    res = {
        "date": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/pad_texture_head.py " + " ".join(sys.argv[1:]),
        "question": "does a logistic head on colour-LBP, spectrum, colour statistics and the MiniFASNet outputs, "
                    "learned on attacks simulated here, catch prints and replays it was not shown, at what cost on "
                    "bona fide capture styles it was or was not shown?",
        "seed": args.seed, "C": args.C,
        "threshold_rules": {**{k: f"BPCER {BPCER_TARGET:.0%} on {v}" for k, v in RULES.items()},
                            "shipped": "the pair only: smile2pay.vision.pad.DEFAULT_THRESHOLD"},
        "split": {"lfw": "pad_attacks person halves (lfw_calib trains, lfw_test reports)",
                  "ckplus": f"by subject, seeded ({info['ckplus_train_subjects']} of {info['ckplus_subjects']} "
                            "train)", "ferplus": "by image (positions 0-1 of every 4 train)",
                  "samples": "never trains (held-out population)"},
        "faces": {f"{k[0]}.{k[1]}.{'train' if k[2] else 'test'}": len(v) for k, v in sorted(col.rows.items())},
        "no_face": {f"{k[0]}.{k[1]}.{'train' if k[2] else 'test'}": v for k, v in sorted(col.no_face.items())},
        "evaluation": evaluate(col, args.C),
        "seconds": {"collect": round(t_col, 1), "total": round(time.perf_counter() - t0, 1)},
        "machine": C.machine(),
        "not_covered": P.NOT_COVERED,
    }
    res["summary"] = {rule: summary(res, rule) for rule in RULES}
    return res


def main(argv=None) -> dict:
    import os

    repo = Path(__file__).resolve().parents[3]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SMILE2PAY_DATA", str(repo.parent / "shared" / "data")))
    ap.add_argument("--models", default=os.environ.get("SMILE2PAY_MODELS", str(repo.parent / "shared" / "models")))
    ap.add_argument("--lfw", type=int, default=800)
    ap.add_argument("--ferplus", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--C", type=float, default=0.1, help="inverse L2 strength of the logistic head")
    ap.add_argument("--out", default=str(repo / "benchmarks" / "results" / "pad_texture_head.json"))
    ap.add_argument("--cache", default=str(repo / "results" / "cache"))
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    res = run(args)
    C.write_json(args.out, res)
    print(table(res))
    print(f"\nwrote {args.out}")
    return res


if __name__ == "__main__":
    main()
