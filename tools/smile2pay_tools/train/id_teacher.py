"""A smile teacher read from the identity network's own features (recipe v4 of the AU model, issue 14).

Why: a linear probe on pooled intermediate feature maps of ArcFace MobileFaceNet (``w600k_mbf.onnx``, the
pack's identity model) ranks in-the-wild smiles better than the AU network trained on the same labels (FER+
Valid AUC 0.995 against 0.980; FER+ test 0.993 against 0.972), because the recogniser has seen 600k people
in the wild and the AU network 40k faces. Running that network on every frame would more than double the AU
stage's cost, so the product reads the probe only on the frames a decision embeds anyway
(:mod:`smile2pay.vision.smile_probe`, fitted and exported by ``benchmarks/au_identity_features.py --probe-ck
--export-probe``; :func:`probe_params`, :func:`save_probe`). Measured, not shipped: the probe as a **teacher**
whose cross-fitted scores on the training faces are soft AU6 / AU12 targets for the small AU network
(:mod:`smile2pay_tools.train.au_mix`, ``distill_weight``), which keeps its 0.6 ms a face (docs/au.md).

Features (:func:`identity_features`): the recogniser on the unpadded centre of each cached AU crop, resized
to 112 (the ArcFace template), two inner tensors pooled (global mean, and the mean of three horizontal bands:
eyes, nose, mouth): ``473`` (256 x 14 x 14, end of the 14 x 14 stage) and ``509`` (512 x 7 x 7, before the
global depthwise conv): 3,072 numbers a face, cached in ``id_features_<source>.npz`` (never committed).
Since probe v3 (16th stop) ``509`` is the smile tail's (:mod:`smile2pay_tools.train.smile_tail`) whenever the
shipped probe names one (:func:`cached_features` ``tail="shipped"``; caches keyed by the tail's sha256); since
v4 (17th stop) ``473`` is too: the tail starts at ``462`` (:func:`tail_layout`).

Teacher (:func:`cross_fitted_teacher`): standardised features -> L2 logistic regression (C 0.01) on the
training rows only (FER+ training split with usable votes: happiness share >= 0.5; LFW training people:
their smile label). Every training row's score comes from a model fitted on the other folds (5-fold), so the
target a row gets is never the teacher's memory of that row's own label.

Licence: ``w600k_mbf`` is InsightFace's (MS1M/WebFace-derived, non-commercial research only); a network
distilled from it inherits that restriction (the AU model is research/evaluation only anyway).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# the features and their pooling are the product's (smile2pay.vision.smile_probe): one definition
from smile2pay.vision.smile_probe import FEATURE_TENSORS, pool_bands  # noqa: E402,F401

TEACHER_MODEL = "w600k_mbf.onnx"
TEACHER_C = 0.01
# the shipped probe learns FER+ rows from their happiness share, not a 0/1 majority (see teacher_rows)
PROBE_SOFT_LABELS = True


def feature_session(models_dir, threads: int = 2, tensors: tuple[str, ...] = FEATURE_TENSORS):
    """An onnxruntime session of the recogniser that also returns ``tensors`` (default :data:`FEATURE_TENSORS`;
    the product's graph change, :func:`smile2pay.models.graph.add_outputs`, and session factory: same rewrites,
    same function)."""
    from smile2pay.models.graph import add_outputs
    from smile2pay.models.runtime import create_session

    path = Path(models_dir) / TEACHER_MODEL
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (the identity model of the mobile pack)")
    try:
        data = add_outputs(path.read_bytes(), tuple(tensors))
    except ValueError as e:
        raise ValueError(f"{path}: {e}: this teacher is defined on w600k_mbf's graph only") from e
    return create_session(data, threads=int(threads), name="identity_features")[0]


def recogniser_blob(crops, flip: bool = False) -> np.ndarray:
    """The recogniser's input for cached AU crops (112 x 112, pad 0.15, BGR uint8): each crop's unpadded centre
    (mirrored with ``flip``) resized to 112, with the recogniser's own preprocessing (RGB, 127.5)."""
    import cv2

    from smile2pay.models.manifest import get_spec
    from smile2pay.vision.align import AU_PAD
    from smile2pay.vision.au import centre_crop

    spec = get_spec(TEACHER_MODEL.rsplit(".", 1)[0])
    c = [cv2.resize(centre_crop(x[:, ::-1] if flip else x, AU_PAD), (112, 112), interpolation=cv2.INTER_LINEAR)
         for x in crops]
    return spec.to_blob(np.stack(c))


def identity_features(crops: np.ndarray, sess, batch: int = 256, progress: bool = False) -> np.ndarray:
    """(N, 3072) float16 pooled features of AU crops (112 x 112, pad 0.15, BGR uint8)."""
    from tqdm import tqdm

    inp = sess.get_inputs()[0].name
    out = []
    for i in tqdm(range(0, len(crops), batch), disable=not progress, desc="identity features", mininterval=5):
        res = sess.run(list(FEATURE_TENSORS), {inp: recogniser_blob(crops[i:i + batch])})
        out.append(np.concatenate([pool_bands(t) for t in res], 1).astype(np.float16))
    return np.concatenate(out) if out else np.zeros((0, 3072), np.float16)


def cached_features(name: str, src: dict, cache_dir, models_dir, progress: bool = True,
                    tail="shipped") -> np.ndarray:
    """Features of one source's crops, cached in ``cache_dir/id_features_<name>[_tail<sha>].npz`` (keyed on the
    paths). ``tail``: the recogniser's own ``509`` (None), the smile tail the shipped probe reads through
    ("shipped": :func:`shipped_tail`; the recogniser's own when the probe declares none), or a tail file
    (:mod:`smile2pay_tools.train.smile_tail`): then the features are the tail's (:func:`tail_features`) on the
    cached tensor it reads (``473``, or ``462`` for a deeper tail)."""
    if isinstance(tail, str) and tail == "shipped":
        tail = shipped_tail()
    sha = None
    if tail is not None:
        import hashlib

        sha = hashlib.sha256(Path(tail).read_bytes()).hexdigest()
    path = Path(cache_dir) / (f"id_features_{name}.npz" if sha is None else f"id_features_{name}_tail{sha[:12]}.npz")
    paths = np.asarray(src["path"]).astype(str)
    if path.is_file():
        d = np.load(path, allow_pickle=False)
        if len(d["path"]) == len(paths) and bool((d["path"] == paths).all()):
            return d["features"]
        log.info("%s: stale (different faces), recomputing", path)
    t0 = time.time()
    if sha is None:
        f = identity_features(src["crops"], feature_session(models_dir), progress=progress)
    else:
        from .smile_tail import cached_start_tensors

        start, _ = tail_layout(tail)
        f = tail_features(cached_start_tensors(name, src, cache_dir, models_dir, progress=progress, start=start), tail)
    np.savez(path, features=f, path=paths)
    log.info("identity features of %s: %d faces in %.0f s", name, len(f), time.time() - t0)
    return f


def shipped_tail() -> Path | None:
    """The smile tail file the package's shipped probe reads through (sha256-checked), or None when the probe
    declares none."""
    import hashlib

    import smile2pay
    from smile2pay.vision.smile_probe import SmileProbe

    weights = Path(smile2pay.__file__).resolve().parent / "models" / "weights"
    probe = SmileProbe((weights / "smile_probe.npz").read_bytes())
    if not probe.tail_sha256:
        return None
    from .smile_tail import TAIL_FILE

    path = weights / TAIL_FILE
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != probe.tail_sha256:
        raise ValueError(f"{path}: missing or not the tail the shipped probe was fitted on")
    return path


def tail_layout(tail) -> tuple[str, tuple[str, ...]]:
    """(the recogniser tensor a smile tail file reads, the tensors it returns):
    :func:`smile2pay.vision.smile_probe.tail_io` of the file."""
    from smile2pay.models.runtime import create_session
    from smile2pay.vision.smile_probe import tail_io

    return tail_io(create_session(Path(tail).read_bytes(), threads=1, name="smile_tail")[0])


def tail_features(t_start, tail, batch: int = 512) -> np.ndarray:
    """(N, 3072) float16 probe features from the tail's input tensors (N, 256, 14, 14: ``473``, or ``462`` for a
    deeper tail) and a smile tail file: the pooled ``473`` and ``509`` (:data:`FEATURE_TENSORS`), each taken
    from the tail's outputs where it returns it, else from its input: the product's order
    (:meth:`SmileProbe.features`)."""
    from smile2pay.models.runtime import create_session
    from smile2pay.vision.smile_probe import run_tail

    sess = create_session(Path(tail).read_bytes(), threads=2, name="smile_tail")[0]
    out = []
    for i in range(0, len(t_start), batch):
        a = np.asarray(t_start[i:i + batch], np.float32)
        out.append(np.concatenate([pool_bands(t) for t in run_tail(sess, a, FEATURE_TENSORS)], 1).astype(np.float16))
    return np.concatenate(out) if out else np.zeros((0, 3072), np.float16)


def teacher_rows(fer: dict, fer_mask: np.ndarray, lfw: dict, lfw_mask: np.ndarray, soft: bool = False):
    """The rows the teacher learns from, as :func:`au_mix.human_labels` picks them: ``(FER+ indices, their
    label, LFW indices, their 0/1 label)``; FER+ usable votes, LFW faces with a smile or expression label
    (:func:`au_mix.lfw_smile_labels`). A FER+ row's label is 0/1 (happiness share >= 0.5), or with ``soft`` the
    happiness share of its emotion votes itself (what the shipped probe learns from since 2026-12-07, 15th stop:
    a face with 6 of 10 happiness votes is a 0.6 target, not a sure smile)."""
    from .au_mix import fer_smile_target, lfw_smile_labels

    share, usable = fer_smile_target(fer["votes"])
    fi = np.flatnonzero(fer_mask & usable)
    li, ly = lfw_smile_labels(lfw, lfw_mask)
    fy = share[fi].astype(np.float64) if soft else (share[fi] >= 0.5).astype(int)
    return fi, fy, li, ly.astype(int)


def soft_rows(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Targets in [0, 1] as weighted 0/1 rows for a logistic fit: each row with target t > 0 once as a positive of
    weight t, each with t < 1 once as a negative of weight 1 - t. Maximising that weighted likelihood is the
    cross-entropy against the soft targets; for 0/1 targets it is the rows themselves, each of weight 1."""
    y = np.asarray(y, np.float64)
    if y.ndim != 1 or len(y) != len(X) or not np.all((y >= 0) & (y <= 1)):
        raise ValueError("targets must be one number in [0, 1] per row")
    pos, neg = y > 0, y < 1
    Xs = np.concatenate([X[pos], X[neg]])
    ys = np.r_[np.ones(int(pos.sum()), int), np.zeros(int(neg.sum()), int)]
    ws = np.r_[y[pos], 1.0 - y[neg]]
    return Xs, ys, ws


def probe_params(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """The probe fitted on rows ``X`` (features) / ``y`` (targets in [0, 1]: 0/1 labels or soft ones, see
    :func:`soft_rows`): standardised, L2 logistic regression (C :data:`TEACHER_C`), the standardisation folded
    into the weights: ``logit = X @ w + b``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(X, np.float32)
    sc = StandardScaler().fit(X)
    Xs, ys, ws = soft_rows(sc.transform(X), y)
    clf = LogisticRegression(C=TEACHER_C, max_iter=3000).fit(Xs, ys, sample_weight=ws)
    coef = clf.coef_[0].astype(np.float64) / sc.scale_
    b = float(clf.intercept_[0] - np.dot(coef, sc.mean_))
    return coef.astype(np.float32), b


def probe_logits(w: np.ndarray, b: float):
    """The probe ``(w, b)`` as a function features -> float32 logits (what :class:`smile2pay.vision.smile_probe.SmileProbe`
    computes on the product's features)."""
    return lambda Z: (np.asarray(Z, np.float32) @ w + np.float32(b)).astype(np.float32)


def fit_probe(X: np.ndarray, y: np.ndarray):
    """:func:`probe_params` as a function features -> float32 logits."""
    return probe_logits(*probe_params(X, y))


def save_probe(path, w: np.ndarray, b: float, meta: dict, tail_sha256: str | None = None,
               tail_input: str | None = None) -> str:
    """Write the probe the product loads (:class:`smile2pay.vision.smile_probe.SmileProbe`); returns its sha256.
    ``tail_sha256``: the smile tail its features were read through (``smile_tail.onnx``), None for the
    recogniser's own tensors; ``tail_input``: the recogniser tensor that tail reads when it is not ``473``
    (a deeper tail, :func:`tail_layout`). Written through :func:`write_atomic`, so a crash never leaves half a
    probe."""
    import io
    import json

    buf = io.BytesIO()
    np.savez(buf, w=np.asarray(w, np.float32), b=np.float32(b), tensors=np.array(FEATURE_TENSORS),
             recognizer=np.array(TEACHER_MODEL.rsplit(".", 1)[0]), meta=np.array(json.dumps(meta, sort_keys=True)),
             **({"tail_sha256": np.array(tail_sha256)} if tail_sha256 else {}),
             **({"tail_input": np.array(tail_input)} if tail_sha256 and tail_input and tail_input != FEATURE_TENSORS[0]
                else {}))
    return write_atomic(path, buf.getvalue())


def write_atomic(path, data: bytes) -> str:
    """Write ``data`` to ``path`` through a temporary file and a rename (a crash never leaves half a file);
    returns its sha256."""
    import hashlib
    import os

    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def cross_fitted_teacher(Xf: np.ndarray, Xl: np.ndarray, fer: dict, fer_mask, lfw: dict, lfw_mask,
                         k: int = 5, seed: int = 0) -> dict:
    """Teacher logits: out-of-fold on the training rows, and from the model fitted on all of them for every
    other face (``fer_all`` / ``lfw_all``: what held-out sets would get; never used as a training target)."""
    fi, fy, li, ly = teacher_rows(fer, fer_mask, lfw, lfw_mask)
    X = np.concatenate([Xf[fi], Xl[li]]).astype(np.float32)
    y = np.concatenate([fy, ly])
    fold = np.random.RandomState(seed).randint(0, k, len(y))
    oof = np.zeros(len(y), np.float32)
    for f in range(k):
        oof[fold == f] = fit_probe(X[fold != f], y[fold != f])(X[fold == f])
    full = fit_probe(X, y)
    return {"fer_idx": fi, "fer_logit": oof[:len(fi)], "lfw_idx": li, "lfw_logit": oof[len(fi):],
            "fer_all": full(Xf), "lfw_all": full(Xl)}
