"""Shared machinery of the benchmarks: cached detection and embedding, JSON writing, machine info.

Detection is the expensive stage shared by every identity setting, so it is cached on its own,
keyed by the detection settings and the detector's weights; embeddings are cached per
(detection key, recogniser, flip) on top of it, AU embeddings per (detection key, AU model).
Caches are pickles in a cache folder (default ``SMILE2PAY_CACHE`` or ``./results/cache``; the
repository git-ignores ``results/``): landmarks and embeddings are biometric data derived from the
datasets and must never be committed.

Images are keyed by their path relative to the data folder when they lie inside it (so the
caches of ``benchmarks/*.py`` and of ``smile2pay bench`` are the same files), else by absolute path.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import pickle
import platform
import sys
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from smile2pay.vision.detect import DEFAULT_DETECTOR, get_detector

log = logging.getLogger("smile2pay_tools.bench")


def default_cache_dir() -> Path:
    return Path(os.environ.get("SMILE2PAY_CACHE", "results/cache"))


def progress(iterable, desc: str, total: int | None = None, enabled: bool = True):
    """tqdm on stderr (no-op when disabled or when there is nothing to do)."""
    from tqdm import tqdm

    n = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    return tqdm(iterable, desc=desc, total=n, file=sys.stderr, disable=(not enabled) or n == 0, leave=False)


def read_csv(path: Path | str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def make_pipeline(models: str | None, detector: str = DEFAULT_DETECTOR, flip: bool = False, **overrides):
    from smile2pay.config import Settings
    from smile2pay.pipeline import FacePipeline

    kw = dict(models=models, detector=detector, flip_tta=flip)
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return FacePipeline(Settings.from_env(**kw))


def _sha(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def detection_key(pipe, dataset: str) -> str:
    s = pipe.settings
    name = get_detector(s.detector).model_name(pipe.pack)
    return "det-" + _sha({"dataset": dataset, "detector": s.detector, "model": name,
                          "sha": pipe.store.check(name).actual_sha256, "sizes": list(s.det_sizes),
                          "thr": s.det_threshold, "pad": s.pad_retry, "min_side": s.min_image_side,
                          **({"rewrites": _rewrites(pipe, name)} if _rewrites(pipe, name) else {})})


def embedding_key(pipe, det_key: str) -> str:
    s = pipe.settings
    key = {"det": det_key, "rec": pipe.model_fingerprint, "flip": s.flip_tta, "pick": "center"}
    rewrites = _rewrites(pipe, pipe.recognizer_spec.name)
    if rewrites:  # a rewritten graph (smile2pay.models.graph) rounds differently: its own cache
        key["rewrites"] = rewrites
    return "emb-" + _sha(key)


def _rewrites(pipe, model: str) -> dict:
    rep = getattr(pipe, "providers", {}).get(model)
    rw = dict(getattr(rep, "rewrites", None) or {})
    return rw if any(rw.values()) else {}


def au_embedding_key(pipe, det_key: str) -> str:
    an = pipe.au_analyzer
    spec = an.model.spec.name if an is not None and an.model is not None else None
    sha = pipe.store.check(spec).actual_sha256 if spec else None
    return "auemb-" + _sha({"det": det_key, "au": spec, "sha": sha, "crop": pipe.settings.au_crop_size,
                            "pad": pipe.settings.au_pad, "pick": "center"})


def settings_summary(pipe) -> dict:
    s = pipe.settings
    return {"pack": pipe.pack.name, "detector": s.detector,
            "detector_model": get_detector(s.detector).model_name(pipe.pack),
            "recognizer": pipe.recognizer_spec.name, "model_fingerprint": pipe.model_fingerprint,
            "det_sizes": list(s.det_sizes), "det_threshold": s.det_threshold, "pad_retry": s.pad_retry,
            "flip_tta": s.flip_tta, "threads": s.threads}


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
            "processor": platform.processor() or platform.machine(),
            "threads_env": os.environ.get("SMILE2PAY_THREADS")}


def _load(path: Path) -> dict:
    if path.is_file():
        with open(path, "rb") as fh:
            return pickle.load(fh)
    return {}


def _save(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def cache_names(paths: Iterable[str | Path], data_root: Path | str | None) -> tuple[list[str], Path]:
    """Cache keys of image paths: relative to ``data_root`` when inside it, else absolute.
    Returns ``(keys, base)`` with ``base / key`` the image file."""
    root = Path(data_root).resolve() if data_root else None
    out = []
    for p in paths:
        a = Path(p).resolve()
        if root is not None:
            try:
                out.append(str(a.relative_to(root)))
                continue
            except ValueError:
                pass
        out.append(str(a))
    return out, (root if root is not None else Path("/"))


def dataset_name(keys: list[str]) -> str:
    """Cache namespace of a set of image keys: the data folder's dataset names used by the
    benchmark scripts (``lfw``, ``ckplus`` for both CK+ folders), else a hash of the folders."""
    tops = {k.split("/", 1)[0] for k in keys if not k.startswith("/")}
    if keys and all(not k.startswith("/") for k in keys):
        if tops == {"lfw"}:
            return "lfw"
        if tops and tops <= {"ckplus48", "ckplus_neutral_peak48"}:
            return "ckplus"
    return "files-" + _sha(sorted({str(Path(k).parent.parent) for k in keys}))


def detect_all(pipe, rel_paths: list[str], data_root: Path, dataset: str, desc: str = "detect",
               use_cache: bool = True, cache_dir: Path | None = None,
               show_progress: bool = True) -> tuple[dict, float]:
    """Run detection on every image once. Returns ({rel_path: record}, seconds spent now).

    A record is ``{"attempt", "boxes", "scores", "landmarks", "shape"}`` or ``{"error": code}``
    when the image could not be decoded. ``attempt`` is the detector pass ("320", "pad:640", ...)
    or "none" when no face was found.
    """
    from smile2pay.errors import Smile2PayError

    path = Path(cache_dir or default_cache_dir()) / f"{detection_key(pipe, dataset)}.pkl"
    cache = _load(path) if use_cache else {}
    todo = [p for p in dict.fromkeys(rel_paths) if p not in cache]
    t0 = time.perf_counter()
    for i, rel in enumerate(progress(todo, desc, enabled=show_progress)):
        try:
            img = pipe.load(str(Path(data_root) / rel))
        except Smile2PayError as e:
            cache[rel] = {"error": e.code, "attempt": "error"}
            continue
        d = pipe.detect(img)
        cache[rel] = {"attempt": d.attempt, "boxes": d.boxes, "scores": d.scores, "landmarks": d.landmarks,
                      "shape": img.shape[:2]}
        if use_cache and (i + 1) % 500 == 0:
            _save(path, cache)
    elapsed = time.perf_counter() - t0 if todo else 0.0
    if todo and use_cache:
        _save(path, cache)
    return {p: cache[p] for p in rel_paths}, elapsed


def _center_face(pipe, img, rec):
    from smile2pay.pipeline import pick_face
    from smile2pay.vision.detect import Detections

    d = Detections(rec["boxes"], rec["scores"], rec["landmarks"], rec["attempt"])
    faces = pipe.faces(img, d)
    return faces[0] if len(faces) == 1 else pick_face(faces, "center", img.shape)


def _no_face(rec) -> bool:
    return bool(rec.get("error")) or rec["attempt"] == "none" or len(rec["scores"]) == 0


def embed_all(pipe, rel_paths: list[str], dets: dict, data_root: Path, det_key: str,
              desc: str = "embed", use_cache: bool = True, cache_dir: Path | None = None,
              show_progress: bool = True, au: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Embed the centre face of every image (LFW's protocol face) from cached detections.

    Uses the pipeline's own stages (``faces`` -> centre pick -> ``embed``) so the vectors are
    those of ``FacePipeline.single(path, pick="center")``; with ``au=True`` the AU embedding
    (``Face.au_embedding``) instead. Returns (embeddings (N, D) with NaN rows where no face was
    found, found mask (N,), seconds spent now).
    """
    key = au_embedding_key(pipe, det_key) if au else embedding_key(pipe, det_key)
    if au and (pipe.au_analyzer is None or pipe.au_analyzer.model is None):
        from smile2pay.errors import ModelError

        raise ModelError("the AU embedding needs the pack's AU model", code="MODEL_MISSING")
    path = Path(cache_dir or default_cache_dir()) / f"{key}.pkl"
    cache = _load(path) if use_cache else {}
    todo = [p for p in dict.fromkeys(rel_paths) if p not in cache]
    t0 = time.perf_counter()
    for i, rel in enumerate(progress(todo, desc, enabled=show_progress)):
        rec = dets[rel]
        if _no_face(rec):
            cache[rel] = None
            continue
        img = pipe.load(str(Path(data_root) / rel))
        face = _center_face(pipe, img, rec)
        if au:
            pipe.au([face])
            cache[rel] = np.asarray(face.au_embedding, np.float32)
        else:
            pipe.embed([face])
            cache[rel] = face.embedding.astype(np.float32)
        if use_cache and (i + 1) % 500 == 0:
            _save(path, cache)
    elapsed = time.perf_counter() - t0 if todo else 0.0
    if todo and use_cache:
        _save(path, cache)
    dim = next((v.shape[0] for v in cache.values() if v is not None), 128 if au else 512)
    emb = np.full((len(rel_paths), dim), np.nan, np.float32)
    found = np.zeros(len(rel_paths), bool)
    for i, rel in enumerate(rel_paths):
        v = cache.get(rel)
        if v is not None:
            emb[i] = v
            found[i] = True
    return emb, found, elapsed


def check_against_single(pipe, rel_paths: Iterable[str], emb_by_path: dict, data_root: Path,
                         atol: float = 1e-5) -> float:
    """Max |difference| between cached vectors and ``pipe.single(path, pick="center")``."""
    worst = 0.0
    for rel in rel_paths:
        v = emb_by_path.get(rel)
        if v is None or np.isnan(v).any():
            continue
        ref = pipe.single(str(Path(data_root) / rel), pick="center", au=False).embedding
        worst = max(worst, float(np.abs(ref - v).max()))
    if worst > atol:
        raise AssertionError(f"cached embeddings differ from FacePipeline.single by {worst:.2e}")
    return worst


def embed_paths(pipe, paths: list[str], data_root: Path | str | None, *, au: bool = False,
                use_cache: bool = True, cache_dir: Path | None = None, show_progress: bool = True,
                desc: str = "") -> dict:
    """Detect (cached) and embed (cached) every image of ``paths``.

    Returns ``{"emb", "found", "keys", "detect_s", "embed_s", "dataset", "no_face", "errors"}``;
    detection failures stay in (``found`` False, NaN rows): callers count them, never drop them.
    """
    keys, base = cache_names(paths, data_root)
    uniq = list(dict.fromkeys(keys))
    ds = dataset_name(uniq)
    dets, det_s = detect_all(pipe, uniq, base, ds, desc=f"detect {desc}".strip(), use_cache=use_cache,
                             cache_dir=cache_dir, show_progress=show_progress)
    emb, found, emb_s = embed_all(pipe, uniq, dets, base, detection_key(pipe, ds),
                                  desc=f"{'au-embed' if au else 'embed'} {desc}".strip(), use_cache=use_cache,
                                  cache_dir=cache_dir, show_progress=show_progress, au=au)
    row = {k: i for i, k in enumerate(uniq)}
    idx = np.array([row[k] for k in keys], dtype=np.int64)
    errors = {k: dets[k]["error"] for k in uniq if dets[k].get("error")}
    return {"emb": emb[idx], "found": found[idx], "keys": keys, "detect_s": det_s, "embed_s": emb_s,
            "dataset": ds, "no_face": [k for k, f in zip(uniq, found) if not f], "errors": errors,
            "detections": dets}


def wait_healthy(base: str, timeout: float, interval: float = 0.05, check=None) -> bool:
    """Poll ``base + "/healthz"`` until it answers 200 (True) or ``timeout`` seconds pass (False).
    ``check()``, when given, runs before every try (e.g. raise if the server process has exited)."""
    import httpx

    deadline = time.perf_counter() + timeout
    while True:
        if check is not None:
            check()
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        if time.perf_counter() >= deadline:
            return False
        time.sleep(interval)


def write_json(path: Path | str, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2, default=json_default)
        fh.write("\n")


def json_default(o):  # noqa: D401
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, frozenset, set)):
        return str(o) if isinstance(o, Path) else sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")



def load_oof(folder: str | Path, key: str) -> tuple[dict, np.ndarray]:
    """Out-of-fold outputs of ``smile2pay train-au --cv``: ``(gt cache arrays, rows)`` where
    ``rows[i]`` is ``cv/fold*/oof.npz[key]`` ("probs" or "embs") for training row i (NaN where
    no fold held the row out)."""
    from smile2pay.errors import RequestError

    d = Path(folder)
    try:
        gt = np.load(d / "cache" / "gt.npz", allow_pickle=True)
    except FileNotFoundError:
        raise RequestError(f"{d}/cache/gt.npz not found", code="DATASET_NOT_FOUND") from None
    folds = sorted((d / "cv").glob("fold*/oof.npz"))
    if not folds:
        raise RequestError(f"no cv/fold*/oof.npz under {d}", code="DATASET_NOT_FOUND")
    rows = None
    for f in folds:
        z = np.load(f)
        if rows is None:
            rows = np.full((len(gt["subject"]), z[key].shape[1]), np.nan, np.float32)
        rows[z["idx"]] = z[key]
    return gt, rows
