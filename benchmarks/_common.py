"""Shared helpers of the accuracy benchmarks (lfw_verify.py, detection_rate.py).

Detection is the expensive stage shared by every identity setting, so it is cached on its own,
keyed by the detection settings and the detector's weights; embeddings are cached per
(detection key, recogniser, flip) on top of it. Caches live in ``results/cache/`` (git-ignored:
landmarks and embeddings are biometric data derived from the datasets and must not be committed).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
import platform
import sys
import time
from pathlib import Path
from typing import Iterable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = os.environ.get("SMILE2PAY_DATA", str(REPO.parent / "shared" / "data"))
DEFAULT_MODELS = os.environ.get("SMILE2PAY_MODELS", str(REPO.parent / "shared" / "models"))
CACHE_DIR = REPO / "results" / "cache"
RESULTS_DIR = REPO / "benchmarks" / "results"


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def make_pipeline(models: str, detector: str = "scrfd", flip: bool = False, **overrides):
    from smile2pay.config import Settings
    from smile2pay.pipeline import FacePipeline

    kw = dict(models=models, detector=detector, flip_tta=flip)
    kw.update(overrides)
    return FacePipeline(Settings.from_env(**kw))


def _sha(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def detection_key(pipe, dataset: str) -> str:
    s = pipe.settings
    name = "yunet" if s.detector == "yunet" else pipe.pack.detector
    return "det-" + _sha({"dataset": dataset, "detector": s.detector, "model": name,
                          "sha": pipe.store.check(name).actual_sha256, "sizes": list(s.det_sizes),
                          "thr": s.det_threshold, "pad": s.pad_retry, "min_side": s.min_image_side})


def embedding_key(pipe, det_key: str) -> str:
    s = pipe.settings
    return "emb-" + _sha({"det": det_key, "rec": pipe.model_fingerprint, "flip": s.flip_tta, "pick": "center"})


def settings_summary(pipe) -> dict:
    s = pipe.settings
    return {"pack": pipe.pack.name, "detector": s.detector,
            "detector_model": "yunet" if s.detector == "yunet" else pipe.pack.detector,
            "recognizer": pipe.recognizer_spec.name, "det_sizes": list(s.det_sizes),
            "det_threshold": s.det_threshold, "pad_retry": s.pad_retry, "flip_tta": s.flip_tta,
            "threads": s.threads}


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
            "processor": platform.processor() or platform.machine()}


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


def detect_all(pipe, rel_paths: list[str], data_root: Path, dataset: str, desc: str = "detect",
               use_cache: bool = True) -> tuple[dict, float]:
    """Run detection on every image once. Returns ({rel_path: record}, seconds spent now).

    A record is ``{"attempt", "boxes", "scores", "landmarks", "shape"}`` or ``{"error": code}``
    when the image could not be decoded. ``attempt`` is the detector pass ("320", "pad:640", ...)
    or "none" when no face was found.
    """
    from tqdm import tqdm

    from smile2pay.errors import Smile2PayError

    path = CACHE_DIR / f"{detection_key(pipe, dataset)}.pkl"
    cache = _load(path) if use_cache else {}
    todo = [p for p in rel_paths if p not in cache]
    t0 = time.perf_counter()
    for i, rel in enumerate(tqdm(todo, desc=desc, file=sys.stderr, disable=not todo)):
        try:
            img = pipe.load(str(data_root / rel))
        except Smile2PayError as e:
            cache[rel] = {"error": e.code, "attempt": "error"}
            continue
        d = pipe.detect(img)
        cache[rel] = {"attempt": d.attempt, "boxes": d.boxes, "scores": d.scores, "landmarks": d.landmarks,
                      "shape": img.shape[:2]}
        if (i + 1) % 500 == 0:
            _save(path, cache)
    elapsed = time.perf_counter() - t0 if todo else 0.0
    if todo:
        _save(path, cache)
    return {p: cache[p] for p in rel_paths}, elapsed


def embed_all(pipe, rel_paths: list[str], dets: dict, data_root: Path, det_key: str,
              desc: str = "embed", use_cache: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """Embed the centre face of every image (LFW's protocol face) from cached detections.

    Uses the pipeline's own stages (``faces`` -> centre pick -> ``embed``) so the vectors are
    those of ``FacePipeline.single(path, pick="center")``. Returns (embeddings (N, D) with NaN rows
    where no face was found, found mask (N,), seconds spent now).
    """
    from tqdm import tqdm

    from smile2pay.pipeline import _pick
    from smile2pay.vision.detect import Detections

    path = CACHE_DIR / f"{embedding_key(pipe, det_key)}.pkl"
    cache = _load(path) if use_cache else {}
    todo = [p for p in rel_paths if p not in cache]
    t0 = time.perf_counter()
    for i, rel in enumerate(tqdm(todo, desc=desc, file=sys.stderr, disable=not todo)):
        rec = dets[rel]
        if rec.get("error") or rec["attempt"] == "none" or len(rec["scores"]) == 0:
            cache[rel] = None
            continue
        img = pipe.load(str(data_root / rel))
        d = Detections(rec["boxes"], rec["scores"], rec["landmarks"], rec["attempt"])
        faces = pipe.faces(img, d)
        face = faces[0] if len(faces) == 1 else _pick(faces, "center", img.shape)
        pipe.embed([face])
        cache[rel] = face.embedding.astype(np.float32)
        if (i + 1) % 500 == 0:
            _save(path, cache)
    elapsed = time.perf_counter() - t0 if todo else 0.0
    if todo:
        _save(path, cache)
    dim = next((v.shape[0] for v in cache.values() if v is not None), 512)
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
        ref = pipe.single(str(data_root / rel), pick="center").embedding
        worst = max(worst, float(np.abs(ref - v).max()))
    if worst > atol:
        raise AssertionError(f"cached embeddings differ from FacePipeline.single by {worst:.2e}")
    return worst


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2, default=_json_default)
        fh.write("\n")


def _json_default(o):
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")
