"""Identity populations for deployment simulations (``benchmarks/identity_deployments.py``).

Each population is a list of images with a subject id and, where the data has one, an expression:

* ``lfw``: the 7,701 LFW images of ``lfw/manifest.csv`` (4,281 people; crowd expression labels);
* ``ckplus``: CK+ 48x48 (``ckplus48`` + ``ckplus_neutral_peak48``; 123 subjects, lab capture);
* ``ferplus``: a seeded sample of FER+ faces with at most one copy of each pixel-identical image.
  FER2013 has **no subject ids**: every kept image is treated as its own person. The same person can
  appear in two different photos, so impostor figures on FER+ are pessimistic (some "impostors" are
  the same person) and there are no genuine pairs.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import common as C


@dataclass
class Population:
    name: str
    paths: list[str]
    subjects: np.ndarray      # (N,) str
    neutral: np.ndarray       # (N,) bool: a neutral (or unlabelled) image, preferred for enrolment
    has_ids: bool = True


def _md5(path: Path) -> str:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return hashlib.md5(img.tobytes()).hexdigest() if img is not None else ""


def load_population(name: str, data_dir: str | Path, *, ferplus_n: int = 3000, seed: int = 0) -> Population:
    from smile2pay_tools.datasets_id import load_dataset
    from smile2pay.errors import RequestError

    data_dir = Path(data_dir)
    if name == "lfw":
        s = load_dataset("lfw", data_dir)
        return Population("lfw", [x.path for x in s], np.array([x.subject for x in s]),
                          np.array([x.expression in ("neutral", "") for x in s]))
    if name == "ckplus":
        s = load_dataset("ckplus", data_dir)
        return Population("ckplus", [x.path for x in s], np.array([x.subject for x in s]),
                          np.array([x.expression in ("neutral", "") for x in s]))
    if name == "ferplus":
        rows = C.read_csv(data_dir / "ferplus" / "manifest.csv")
        rows = [r for r in rows if int(r["votes_NF"] or 0) == 0 and r["ferplus_majority"] not in ("NF", "unknown", "")]
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(rows))
        keep, seen = [], set()
        for i in order:
            h = _md5(data_dir / rows[i]["path"])
            if not h or h in seen:
                continue
            seen.add(h)
            keep.append(rows[i])
            if len(keep) >= ferplus_n:
                break
        paths = [str(data_dir / r["path"]) for r in keep]
        return Population("ferplus", paths, np.array([f"fer{i}" for i in range(len(keep))]),
                          np.array([r["ferplus_majority"] == "neutral" for r in keep]), has_ids=False)
    raise RequestError(f"unknown population {name!r}: lfw, ckplus or ferplus", code="REQUEST_INVALID")


def embed_population(pipe, pop: Population, data_dir, *, show_progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Identity embeddings (cached) of a population; returns (emb (N, 512), found (N,))."""
    e = C.embed_paths(pipe, pop.paths, data_dir, show_progress=show_progress, desc=pop.name)
    return e["emb"], e["found"]
