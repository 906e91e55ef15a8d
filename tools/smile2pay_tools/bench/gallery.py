"""1:N gallery search benchmark: exact vs approximate FAISS indexes at 10k / 100k / 1M identities.

Data model (fitted on REAL LFW w600k_mbf embeddings, ``results/lfw_embeddings.npz`` from
``benchmarks/gallery_embed_lfw.py``; isotropic random clusters give meaningless recall, see
MEASURING.md): identity centres ~ N(mu, C_between) (mean and covariance of the per-person mean
embeddings of LFW people with >= 2 images); per-image noise ~ N(0, a^2 C_within) (covariance of the
residuals around each person's mean), the scale ``a`` set by bisection so that the synthetic
genuine-pair cosine matches the real one. Gallery vector = normalise(centre + noise); query =
normalise(centre + fresh noise) of a random enrolled identity.

Generation is streamed in chunks straight into the exact index, whose storage is then the only
copy of the gallery: approximate indexes are built from zero-copy views of it, one at a time,
and freed before the next (peak ~ 2 copies of the vectors + one index's overhead).

Indexes (``flat`` always; the others chosen with ``--indexes``, run in this order, each freed
before the next):
  * ``flat``: ``IndexIDMap2(IndexFlatIP)``, exact, the gallery default and the ground truth;
  * ``ivf``: ``IndexIVFFlat`` (IP), ``nlist`` centroids from spherical k-means on a sample, nprobe
    sweep, with an exact (flat) coarse quantizer and then an HNSW coarse quantizer over the same
    centroids and inverted lists (``ivf_hnswq``);
  * ``ivfpq``: ``IndexIVFPQFastScan`` (same centroids, PQ ``--pq-m`` x 4 bits on the residuals) under
    ``IndexRefine`` that re-ranks ``--refine-k`` x k candidates with the exact vectors (the flat
    index's storage: no second copy), nprobe sweep, flat then HNSW coarse quantizer (``ivfpq_hnswq``);
  * ``hnsw``: ``IndexHNSWFlat`` (IP), efSearch sweep (last: its build is the slowest).

Timing: one query at a time on ``--query-threads`` (1) FAISS threads, ms/query median and p95;
builds on ``--build-threads``. recall@1 = the approximate top-1 id equals the exact top-1 id
(exact answers from a batched exact search over all queries). Memory: RSS growth of the process
while the index is alive, and the index's own byte count.

Library use (``smile2pay bench gallery`` and ``benchmarks/gallery_search.py``)::

    ap = argparse.ArgumentParser(); configure(ap); result = run(ap.parse_args())
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

DEFAULT_NPZ = Path(__file__).resolve().parents[3] / "results" / "lfw_embeddings.npz"
INDEXES = ("ivf", "ivfpq", "hnsw")


def log(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data model
def fit_stats(npz: str | os.PathLike) -> dict:
    """Mean / between- and within-identity covariances and real genuine / impostor cosines."""
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


def _chol(C: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(C)
    return V * np.sqrt(np.clip(w, 0, None))


def _norm(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Synth:
    """Synthetic identities drawn from the fitted statistics (see the module docstring)."""

    def __init__(self, st: dict, seed: int = 0) -> None:
        self.mu, self.Lb, self.Lw = st["mu"], _chol(st["C_between"]), _chol(st["C_within"])
        self.dim = len(self.mu)
        self.rng = np.random.default_rng(seed)
        self.a = 1.0

    def centres(self, n: int) -> np.ndarray:
        return (self.mu + self.rng.standard_normal((n, self.dim)) @ self.Lb.T).astype(np.float32)

    def sample(self, centres: np.ndarray) -> np.ndarray:
        return _norm(centres + self.a * (self.rng.standard_normal(centres.shape) @ self.Lw.T))

    def calibrate(self, target: float, n: int = 4000) -> tuple[float, float]:
        """Bisect the noise scale so the mean genuine cosine equals ``target``; returns
        (synthetic genuine cos, synthetic impostor cos)."""
        c = self.centres(n)
        lo, hi = 0.05, 5.0
        for _ in range(30):
            self.a = (lo + hi) / 2
            g = np.einsum("ij,ij->i", self.sample(c), self.sample(c)).mean()
            lo, hi = (self.a, hi) if g > target else (lo, self.a)
        g = float(np.einsum("ij,ij->i", self.sample(c), self.sample(c)).mean())
        x = self.sample(c)
        return g, float(np.einsum("ij,ij->i", x[: n // 2], x[n // 2:]).mean())

    def stream(self, n: int, query_ids: np.ndarray, chunk: int = 50_000):
        """Yield ``(start, gallery_chunk)`` for identities ``0..n-1`` and fill ``self.queries``
        (one fresh sample per entry of ``query_ids``, in that order) on the way, so that no
        array of all centres is ever held."""
        self.queries = np.empty((len(query_ids), self.dim), np.float32)
        order = np.argsort(query_ids, kind="stable")
        sq = query_ids[order]
        for s in range(0, n, chunk):
            m = min(n, s + chunk) - s
            c = self.centres(m)
            g = self.sample(c)
            lo, hi = np.searchsorted(sq, [s, s + m])
            if hi > lo:
                self.queries[order[lo:hi]] = self.sample(c[sq[lo:hi] - s])
            yield s, g


# ---------------------------------------------------------------- measuring helpers
def rss_mb() -> float:
    """Resident set size of this process (MiB), from /proc (0 where unavailable)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mb() -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_queries(index, Q: np.ndarray, k: int = 1) -> tuple[np.ndarray, dict]:
    """Search one query at a time; returns (ids (nq, k), timing dict in ms)."""
    t = np.empty(len(Q))
    ids = np.empty((len(Q), k), np.int64)
    for i in range(len(Q)):
        q = Q[i:i + 1]
        t0 = time.perf_counter()
        _, ids[i] = index.search(q, k)
        t[i] = (time.perf_counter() - t0) * 1000
    return ids, {"ms_median": round(float(np.median(t)), 4), "ms_p95": round(float(np.quantile(t, 0.95)), 4),
                 "ms_mean": round(float(t.mean()), 4), "queries": len(Q)}


def _mb(nbytes: float) -> float:
    return round(nbytes / 2**20, 1)


def _hnsw_bytes(h) -> int:
    g = h.hnsw
    return int(h.ntotal) * h.d * 4 + g.neighbors.size() * 4 + g.levels.size() * 4 + g.offsets.size() * 8


def _ivf_bytes(ivf) -> int:
    inv = ivf.invlists
    n = sum(inv.list_size(i) for i in range(ivf.nlist))
    return n * (ivf.code_size + 8) + ivf.nlist * ivf.d * 4


# ---------------------------------------------------------------- CLI surface
def configure(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser`` (no ``--json``: the caller decides the output)."""
    a = parser.add_argument
    a("--npz", default=os.environ.get("SMILE2PAY_LFW_EMBEDDINGS", str(DEFAULT_NPZ)),
      help="real embeddings to fit the data model on (subjects, emb); default results/lfw_embeddings.npz")
    a("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="gallery sizes")
    a("--indexes", nargs="+", choices=INDEXES, default=list(INDEXES),
      help="approximate indexes to measure (the exact flat index always runs: it is the ground truth)")
    a("--queries", type=int, default=500, help="queries timed on approximate indexes (recall over all)")
    a("--flat-queries", type=int, default=200, help="single queries timed on the exact index")
    a("--build-threads", type=int, default=2, help="FAISS threads for builds and ground truth")
    a("--query-threads", type=int, default=1, help="FAISS threads while timing single queries")
    a("--chunk", type=int, default=50_000, help="generation / add chunk (rows)")
    a("--seed", type=int, default=0)
    a("--hnsw-m", type=int, default=32)
    a("--hnsw-efc", type=int, default=80, help="HNSW efConstruction")
    a("--hnsw-ef", type=int, nargs="+", default=[32, 64, 128, 256, 512], help="HNSW efSearch sweep")
    a("--hnsw-max", type=int, default=1_000_000, help="skip HNSW above this size")
    a("--nlist", type=int, default=0, help="IVF lists (0: 4*sqrt(n) rounded to a power of 2, 64..4096)")
    a("--train-per-list", type=int, default=40, help="IVF k-means sample = nlist x this (<= n)")
    a("--kmeans-iter", type=int, default=10)
    a("--nprobe", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024, 2048],
      help="IVF nprobe sweep (values > nlist skipped)")
    a("--pq-m", type=int, nargs="+", default=[64],
      help="ivfpq: PQ sub-quantizers (4 bits each); several values: one index each (ivfpq, ivfpq_m<M>...)")
    a("--refine-k", type=int, default=16, help="ivfpq: candidates re-ranked exactly = this x k")
    a("--no-hnsw-quantizer", action="store_true", help="skip the IVF sweeps with an HNSW coarse quantizer")


def _nlist(n: int, asked: int) -> int:
    if asked:
        return asked
    return int(min(4096, max(64, 2 ** round(np.log2(4 * np.sqrt(n))))))


def run(args: argparse.Namespace, on_size: Callable[[dict], None] | None = None) -> dict:
    """Run the benchmark described by ``args`` (from :func:`configure`); progress on stderr.

    ``on_size(partial_result)`` is called after each index of each gallery size (e.g. to save
    partial JSON). Returns the JSON-ready result: ``data_model``, ``machine``, ``settings``,
    ``sizes[str(n)]`` with ``flat``, ``ivf``, ``ivf_hnswq``, ``ivfpq``, ``ivfpq_hnswq``, ``hnsw``.
    """
    import faiss

    t_all = time.perf_counter()
    st = fit_stats(args.npz)
    syn = Synth(st, seed=args.seed)
    g, imp = syn.calibrate(st["real_genuine_cos"])
    log(f"real genuine cos {st['real_genuine_cos']:.3f} impostor {st['real_impostor_cos']:.3f}; "
        f"synthetic genuine {g:.3f} impostor {imp:.3f} (noise scale {syn.a:.3f})")
    out: dict[str, Any] = {
        "data_model": {"source": "LFW w600k_mbf embeddings",
                       **{k: v for k, v in st.items() if not isinstance(v, np.ndarray)},
                       "synthetic_genuine_cos": g, "synthetic_impostor_cos": imp, "noise_scale": syn.a},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "faiss": faiss.__version__,
                    "load_average_at_start": os.getloadavg()},
        "settings": {k: v for k, v in vars(args).items()
                     if isinstance(v, (int, float, str, list, bool, type(None))) and k != "json"},
        "query_threads": args.query_threads, "build_threads": args.build_threads, "sizes": {}}
    save = (lambda: on_size(out)) if on_size else (lambda: None)
    for n in sorted(args.sizes):
        out["sizes"][str(n)] = res = {}
        _run_size(faiss, syn, n, args, res, save)
        save()
    out["machine"]["load_average_at_end"] = os.getloadavg()
    out["total_s"] = round(time.perf_counter() - t_all, 1)
    return out


def _sweep(faiss, index, Q, recall, n, name, values, set_param, args) -> list[dict]:
    faiss.omp_set_num_threads(args.query_threads)
    runs = []
    for v in values:
        key = set_param(v)
        ids, t = time_queries(index, Q)
        runs.append({**key, **t, "recall_at_1": recall(ids)})
        log(n, name, runs[-1])
    faiss.omp_set_num_threads(args.build_threads)
    return runs


def _run_size(faiss, syn: Synth, n: int, args, res: dict, save: Callable[[], None]) -> None:
    d = syn.dim
    qi = np.random.default_rng(args.seed + n).integers(0, n, args.queries)
    res.update({"n": n, "d": d, "queries": args.queries})
    rss0 = rss_mb()
    # 1. exact index = the only copy of the gallery (streamed in)
    faiss.omp_set_num_threads(args.build_threads)
    inner = faiss.IndexFlatIP(d)
    flat = faiss.IndexIDMap2(inner)
    t_add = 0.0
    t0 = time.perf_counter()
    for s, chunk in syn.stream(n, qi, args.chunk):
        t1 = time.perf_counter()
        flat.add_with_ids(chunk, np.arange(s, s + len(chunk), dtype=np.int64))
        t_add += time.perf_counter() - t1
    res["generate_s"] = round(time.perf_counter() - t0 - t_add, 1)
    Q = syn.queries
    G = faiss.rev_swig_ptr(inner.get_xb(), n * d).reshape(n, d)    # zero-copy view of the index storage
    t0 = time.perf_counter()
    _, I_exact = flat.search(Q, 1)                                    # ground truth, batched
    res["exact_batched_search_s"] = round(time.perf_counter() - t0, 2)
    res["exact_top1_is_true_identity"] = float(np.mean(I_exact[:, 0] == qi))
    faiss.omp_set_num_threads(args.query_threads)
    I, tf = time_queries(flat, Q[: args.flat_queries])
    faiss.omp_set_num_threads(args.build_threads)
    # single-query exact search agrees with the batched ground truth (up to score ties)
    res["flat"] = {**tf, "recall_at_1": round(float(np.mean(I[:, 0] == I_exact[: len(I), 0])), 4),
                   "build_s": round(t_add, 2), "index_mb": _mb(n * d * 4 + n * 8),
                   "rss_delta_mb": round(rss_mb() - rss0, 1)}
    log(n, "flat", res["flat"])
    save()
    base = rss_mb()

    def recall(ids):
        return round(float(np.mean(ids[:, 0] == I_exact[:, 0])), 4)

    nlist = _nlist(n, args.nlist)
    nprobes = [p for p in args.nprobe if p <= nlist]
    km = quant = hq = None
    if {"ivf", "ivfpq"} & set(args.indexes):
        # shared coarse stage: spherical k-means on a random sample; exact and HNSW quantizers
        ntrain = min(n, args.train_per_list * nlist)
        t0 = time.perf_counter()
        sample = G[np.sort(np.random.default_rng(args.seed + 2).choice(n, ntrain, replace=False))]
        km = faiss.Kmeans(d, nlist, niter=args.kmeans_iter, spherical=True, seed=args.seed + 3,
                          min_points_per_centroid=1, max_points_per_centroid=10**9)
        km.train(sample)
        del sample
        quant = faiss.IndexFlatIP(d)
        quant.add(km.centroids)
        t_train = time.perf_counter() - t0
        hq = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        hq.hnsw.efConstruction = 80
        t0 = time.perf_counter()
        hq.add(km.centroids)
        t_hq = time.perf_counter() - t0
        res["coarse"] = {"nlist": nlist, "train_points": ntrain, "kmeans_iter": args.kmeans_iter,
                         "kmeans_s": round(t_train, 1), "hnsw_quantizer_build_s": round(t_hq, 2),
                         "hnsw_quantizer": "IndexHNSWFlat(M=32, efConstruction=80), efSearch = max(64, 2*nprobe)"}

    def coarse_sweeps(name, index, ivf):
        def set_flat(v):
            ivf.nprobe = v
            return {"nprobe": v}

        res[name]["runs"] = _sweep(faiss, index, Q, recall, n, name, nprobes, set_flat, args)
        save()
        if not args.no_hnsw_quantizer:
            ivf.quantizer = hq          # same centroids and inverted lists, approximate coarse search

            def set_h(v):
                ivf.nprobe = v
                hq.hnsw.efSearch = max(64, 2 * v)
                return {"nprobe": v}

            res[name + "_hnswq"] = {"note": "same centroids and inverted lists as " + name +
                                    " (built with exact assignment), HNSW coarse quantizer",
                                    "runs": _sweep(faiss, index, Q, recall, n, name + "_hnswq", nprobes, set_h, args)}
            ivf.quantizer = quant
            save()

    # 2. IVF-Flat
    if "ivf" in args.indexes:
        ivf = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.is_trained = True
        t0 = time.perf_counter()
        for s in range(0, n, args.chunk):
            ivf.add_with_ids(G[s:s + args.chunk], np.arange(s, min(n, s + args.chunk), dtype=np.int64))
        t_add = time.perf_counter() - t0
        sizes = np.array([ivf.invlists.list_size(i) for i in range(nlist)])
        res["ivf"] = {"index": f"IVF{nlist},Flat", "add_s": round(t_add, 1),
                      "build_s": round(res["coarse"]["kmeans_s"] + t_add, 1),
                      "list_size_min_median_max": [int(sizes.min()), int(np.median(sizes)), int(sizes.max())],
                      "index_mb": _mb(_ivf_bytes(ivf)), "rss_delta_mb": round(rss_mb() - base, 1)}
        log(n, "ivf build", res["ivf"])
        coarse_sweeps("ivf", ivf, ivf)
        del ivf
    # 3. IVF-PQ fast scan + exact re-ranking from the flat storage
    for m in (args.pq_m if "ivfpq" in args.indexes else []):
        name = "ivfpq" if m == args.pq_m[0] else f"ivfpq_m{m}"
        ivf = faiss.IndexIVFPQFastScan(quant, d, nlist, m, 4, faiss.METRIC_INNER_PRODUCT)
        ntrain = min(n, 65_536)
        t0 = time.perf_counter()
        ivf.train(G[np.sort(np.random.default_rng(args.seed + 4).choice(n, ntrain, replace=False))])  # PQ only
        t_pq = time.perf_counter() - t0
        t0 = time.perf_counter()
        for s in range(0, n, args.chunk):
            ivf.add(G[s:s + args.chunk])          # ids = positions = rows of the flat storage
        t_add = time.perf_counter() - t0
        ref = faiss.IndexRefine(ivf, inner)      # re-ranks with the exact vectors already held by `flat`
        ref.k_factor = args.refine_k
        pq_bytes = n * (m // 2 + 8) + nlist * d * 4 + 16 * d * 4
        res[name] = {"index": f"IVF{nlist},PQ{m}x4fs + exact re-rank of {args.refine_k}xk",
                     "pq_train_points": ntrain, "pq_train_s": round(t_pq, 1), "add_s": round(t_add, 1),
                     "build_s": round(res["coarse"]["kmeans_s"] + t_pq + t_add, 1),
                     "index_mb": _mb(pq_bytes), "rss_delta_mb": round(rss_mb() - base, 1),
                     "memory_note": "plus the exact float vectors for re-ranking (here: the flat "
                                    "index's storage, n x d x 4 bytes, not counted)"}
        log(n, name + " build", res[name])
        coarse_sweeps(name, ref, ivf)
        del ref, ivf
    del km, quant, hq
    # 4. HNSW (last: slowest build)
    if "hnsw" in args.indexes and n <= args.hnsw_max:
        h = faiss.IndexHNSWFlat(d, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        h.hnsw.efConstruction = args.hnsw_efc
        t0 = time.perf_counter()
        for s in range(0, n, args.chunk):
            h.add(G[s:s + args.chunk])
        bt = time.perf_counter() - t0
        res["hnsw"] = {"M": args.hnsw_m, "efConstruction": args.hnsw_efc, "build_s": round(bt, 1),
                       "index_mb": _mb(_hnsw_bytes(h)), "rss_delta_mb": round(rss_mb() - base, 1)}
        log(n, "hnsw build", res["hnsw"])

        def set_ef(v):
            h.hnsw.efSearch = v
            return {"efSearch": v}

        res["hnsw"]["runs"] = _sweep(faiss, h, Q, recall, n, "hnsw", args.hnsw_ef, set_ef, args)
        del h
    elif "hnsw" in args.indexes:
        res["hnsw"] = {"skipped": f"n > --hnsw-max {args.hnsw_max}"}
    res["peak_rss_mb_process"] = round(peak_rss_mb(), 1)
    del G, flat, inner
