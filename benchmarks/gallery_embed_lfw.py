"""Embed every staged LFW image once (w600k_mbf, centre face) and cache the vectors.

The cache (``results/lfw_embeddings.npz``, git-ignored: embeddings are biometric data derived
from LFW and must not be committed) feeds the gallery benchmarks: the statistics of real
embeddings for the synthetic 1:N search, and precomputed vectors for the crash test.

    nice python benchmarks/gallery_embed_lfw.py [--out results/lfw_embeddings.npz]
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("SMILE2PAY_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--models", default=os.environ.get("SMILE2PAY_MODELS", str(REPO.parent / "shared" / "models")))
    ap.add_argument("--out", default=str(REPO / "results" / "lfw_embeddings.npz"))
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args(argv)
    from tqdm import tqdm

    from smile2pay.config import Settings
    from smile2pay.errors import Smile2PayError
    from smile2pay.pipeline import FacePipeline

    data = Path(args.data)
    rows = list(csv.DictReader(open(data / "lfw" / "manifest.csv")))
    if args.limit:
        rows = rows[: args.limit]
    pipe = FacePipeline(Settings.from_env(models=args.models, threads=1))
    paths, subjects, embs, passed, failed = [], [], [], [], []
    t0 = time.perf_counter()
    for r in tqdm(rows, desc="embed", file=sys.stderr):
        try:
            f = pipe.single(str(data / r["path"]), pick="center")
        except Smile2PayError as e:
            failed.append((r["path"], e.code))
            continue
        paths.append(r["path"]); subjects.append(r["subject"]); embs.append(f.embedding)
        passed.append(f.quality.passed)
    dt = time.perf_counter() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, paths=np.array(paths), subjects=np.array(subjects),
             emb=np.stack(embs).astype(np.float32), quality_passed=np.array(passed),
             fingerprint=np.array(pipe.model_fingerprint))
    print(f"embedded {len(embs)} of {len(rows)} images in {dt:.1f}s ({len(rows)/dt:.1f}/s, 1 thread); "
          f"failed {len(failed)}: {failed[:5]}; quality passed {int(np.sum(passed))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
