"""1:N search at 10k / 100k / 1M synthetic identities drawn from the statistics of REAL embeddings.

Model of the data (fitted on LFW w600k_mbf embeddings, ``results/lfw_embeddings.npz`` from
gallery_embed_lfw.py): identity centres ~ N(mu, C_between) (mean and covariance of the per-person
mean embeddings of LFW people with >= 2 images), per-image noise ~ N(0, a^2 C_within) (covariance of
the residuals around each person's mean), with the scale ``a`` set by bisection so the synthetic
genuine-pair cosine matches the real one. Gallery vector = normalise(centre + noise), query =
normalise(centre + fresh noise) of a random enrolled identity.

Indexes: exact ``IndexIDMap2(IndexFlatIP)`` (the gallery default), ``IndexHNSWFlat`` (IP) and
``IndexIVFFlat`` (IP). Query timing: one query at a time on 1 FAISS thread; ms/query median and
p95. recall@1: the approximate top-1 equals the exact top-1.

    nice python benchmarks/gallery_search.py --sizes 10000 100000 1000000
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def fit_stats(npz: str):
    z = np.load(npz)
    subj, X = z["subjects"], z["emb"].astype(np.float64)
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(subj):
        groups.setdefault(str(s), []).append(i)
    multi = [ix for ix in groups.values() if len(ix) >= 2]
    means = np.stack([X[ix].mean(0) for ix in multi])
    resid = np.concatenate([(X[ix] - X[ix].mean(0)) * np.sqrt(len(ix) / (len(ix) - 1)) for ix in multi])
    gen = np.array([X[ix[0]] @ X[ix[1]] for ix in multi])
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(multi), 20000), rng.integers(0, len(multi), 20000)
    keep = a != b
    imp = np.einsum("ij,ij->i", X[[multi[i][0] for i in a[keep]]], X[[multi[i][0] for i in b[keep]]])
    return {"mu": means.mean(0), "C_between": np.cov(means, rowvar=False), "C_within": np.cov(resid, rowvar=False),
            "real_genuine_cos": float(gen.mean()), "real_impostor_cos": float(imp.mean()),
            "real_impostor_p999": float(np.quantile(imp, 0.999)), "n_people": len(multi), "n_images": len(X)}


def _chol(C):
    w, V = np.linalg.eigh(C)
    return V * np.sqrt(np.clip(w, 0, None))


def _norm(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Synth:
    def __init__(self, st, seed=0):
        self.mu, self.Lb, self.Lw = st["mu"], _chol(st["C_between"]), _chol(st["C_within"])
        self.rng = np.random.default_rng(seed)
        self.a = 1.0

    def centres(self, n):
        out = np.empty((n, len(self.mu)), np.float32)
        for s in range(0, n, 100_000):
            m = min(n, s + 100_000) - s
            out[s:s + m] = self.mu + self.rng.standard_normal((m, len(self.mu))) @ self.Lb.T
        return out

    def sample(self, centres):
        out = np.empty_like(centres)
        for s in range(0, len(centres), 100_000):
            c = centres[s:s + 100_000]
            out[s:s + len(c)] = _norm(c + self.a * (self.rng.standard_normal(c.shape) @ self.Lw.T))
        return out

    def calibrate(self, target, n=4000):
        c = self.centres(n)
        lo, hi = 0.05, 5.0
        for _ in range(30):
            self.a = (lo + hi) / 2
            g = np.einsum("ij,ij->i", self.sample(c), self.sample(c)).mean()
            lo, hi = (self.a, hi) if g > target else (lo, self.a)
        g = float(np.einsum("ij,ij->i", self.sample(c), self.sample(c)).mean())
        x = self.sample(c)
        imp = float(np.einsum("ij,ij->i", x[: n // 2], x[n // 2:]).mean())
        return g, imp


def time_queries(index, Q, k=1):
    t = []
    I = np.empty((len(Q), k), np.int64)
    for i in range(len(Q)):
        q = Q[i:i + 1]
        t0 = time.perf_counter()
        _, I[i] = index.search(q, k)
        t.append((time.perf_counter() - t0) * 1000)
    t = np.array(t)
    return I, {"ms_median": round(float(np.median(t)), 4), "ms_p95": round(float(np.quantile(t, 0.95)), 4),
               "ms_mean": round(float(t.mean()), 4), "queries": len(Q)}


def main(argv=None) -> int:
    import faiss

    ap = argparse.ArgumentParser(description="gallery 1:N search benchmark")
    ap.add_argument("--npz", default=str(REPO / "results" / "lfw_embeddings.npz"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--flat-queries", type=int, default=200, help="single queries timed on the exact index")
    ap.add_argument("--build-threads", type=int, default=2)
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--hnsw-efc", type=int, default=80)
    ap.add_argument("--hnsw-ef", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--hnsw-max", type=int, default=1_000_000, help="skip HNSW above this size")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "gallery_search.json"))
    args = ap.parse_args(argv)

    st = fit_stats(args.npz)
    syn = Synth(st)
    g, imp = syn.calibrate(st["real_genuine_cos"])
    log(f"real genuine cos {st['real_genuine_cos']:.3f} impostor {st['real_impostor_cos']:.3f}; "
        f"synthetic genuine {g:.3f} impostor {imp:.3f} (noise scale {syn.a:.3f})")
    out = {"data_model": {"source": "LFW w600k_mbf embeddings", **{k: v for k, v in st.items()
                                                                    if not isinstance(v, np.ndarray)},
                          "synthetic_genuine_cos": g, "synthetic_impostor_cos": imp, "noise_scale": syn.a},
           "machine": {"cpu_count": __import__("os").cpu_count(), "platform": platform.platform(),
                       "faiss": faiss.__version__},
           "query_threads": 1, "build_threads": args.build_threads, "sizes": {}}
    nmax = max(args.sizes)
    centres = syn.centres(nmax)
    gallery = syn.sample(centres)
    qrng = np.random.default_rng(1)
    for n in sorted(args.sizes):
        G = gallery[:n]
        qi = qrng.integers(0, n, args.queries)
        Q = syn.sample(centres[qi])
        res = {"n": n, "d": G.shape[1]}
        faiss.omp_set_num_threads(args.build_threads)
        flat = faiss.IndexIDMap2(faiss.IndexFlatIP(G.shape[1]))
        flat.add_with_ids(G, np.arange(n, dtype=np.int64))
        _, I_exact = flat.search(Q, 1)          # ground truth (batched)
        res["exact_top1_is_true_identity"] = float(np.mean(I_exact[:, 0] == qi))
        faiss.omp_set_num_threads(1)
        _, tf = time_queries(flat, Q[: args.flat_queries])
        res["flat"] = {**tf, "recall_at_1": 1.0}
        log(n, "flat", tf)
        del flat
        # HNSW
        if n <= args.hnsw_max:
            faiss.omp_set_num_threads(args.build_threads)
            h = faiss.IndexHNSWFlat(G.shape[1], args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            h.hnsw.efConstruction = args.hnsw_efc
            t0 = time.perf_counter()
            h.add(G)
            bt = time.perf_counter() - t0
            faiss.omp_set_num_threads(1)
            res["hnsw"] = {"M": args.hnsw_m, "efConstruction": args.hnsw_efc, "build_s": round(bt, 1), "runs": []}
            for ef in args.hnsw_ef:
                h.hnsw.efSearch = ef
                I, t = time_queries(h, Q)
                r = {"efSearch": ef, **t, "recall_at_1": float(np.mean(I[:, 0] == I_exact[:, 0]))}
                res["hnsw"]["runs"].append(r)
                log(n, "hnsw", r)
            del h
        # IVF
        nlist = int(min(4096, max(64, 4 * np.sqrt(n))))
        faiss.omp_set_num_threads(args.build_threads)
        quant = faiss.IndexFlatIP(G.shape[1])
        ivf = faiss.IndexIVFFlat(quant, G.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
        ntrain = min(n, 64 * nlist)
        t0 = time.perf_counter()
        ivf.train(G[np.random.default_rng(2).choice(n, ntrain, replace=False)])
        ivf.add(G)
        bt = time.perf_counter() - t0
        faiss.omp_set_num_threads(1)
        res["ivf"] = {"nlist": nlist, "train_points": ntrain, "build_s": round(bt, 1), "runs": []}
        for npb in args.nprobe:
            ivf.nprobe = npb
            I, t = time_queries(ivf, Q)
            r = {"nprobe": npb, **t, "recall_at_1": float(np.mean(I[:, 0] == I_exact[:, 0]))}
            res["ivf"]["runs"].append(r)
            log(n, "ivf", r)
        del ivf, quant
        out["sizes"][str(n)] = res
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))   # partial results survive a long run
    out["command"] = "python benchmarks/gallery_search.py " + " ".join(argv or sys.argv[1:])
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
