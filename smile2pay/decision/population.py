"""Self-calibration of the identity threshold from the deployment's own gallery (issue 20).

A threshold calibrated on one population does not hold on another: impostor similarity depends on who
the customers are and which camera sees them (LFW needs cosine 0.23 for FAR 1e-3, a uniform studio
population 0.46). But a deployment carries a sample of *its own* impostor distribution without any
label: every enrolled user is a different person, so the scores between the templates of different
users are impostor comparisons of exactly this population and camera.

Method (location-scale tail transfer):

1. The cross-user scores of the gallery (max over the two users' templates, like a claim) are the
   sample. From 500 pairs on (32 users), the **tail** is modelled directly: peaks over threshold with
   an exponential tail (generalised Pareto, shape 0) fitted on the top 50 pairs (at most the top 10%),
   extrapolated to the FAR; once the pairs reach the FAR itself (``pairs * far >= 50``) it is the
   empirical quantile. An exponential tail is heavier than the near-normal tail of a good embedding,
   so on light-tailed populations it errs strict (LFW: 0.290 for a true 0.282 at FAR 1e-4).
2. Below 500 pairs the tail cannot be seen; its shape is **transferred** from the calibration's
   reference populations: ``median + z * scale`` (robust scale: half the 15.9-84.1 percentile range),
   ``z`` that of the heaviest-tailed reference (``identity.tail_shape`` of the calibration file).
3. Uncertainty: users are resampled (bootstrap over users: the pairs of one user are correlated) and
   the 95th percentile of the estimate is the **bound**.
4. Threshold in use, from :data:`MIN_USERS` enrolled users on: the bound, but never below the most
   lenient reference population's threshold at that FAR (``floor``). With fewer users the evidence
   cannot justify going below the shipped (strictest reference) threshold; from 10 users it is raised
   to the point estimate when that is higher (a population visibly worse than every reference). There
   is no cap above: a population that needs more gets more.

Everything here is pure numpy on embeddings; :class:`smile2pay.api.Smile2Pay` feeds it the gallery.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..metrics.tail import robust_loc_scale

DEFAULT_FAR = 1e-4
#: below this many enrolled users the estimate is too noisy to act on: the shipped threshold as it is
MIN_USERS_TO_RAISE = 10
#: below this many enrolled users the shipped threshold is never lowered
MIN_USERS = 50
#: users used for the estimate (a random sample above this: 1,000 users give 499,500 pairs)
MAX_USERS = 1000
BOOTSTRAP = 100
#: the tail model needs this many pairs; it is fitted on the top TAIL_EXCEEDANCES pairs (at most the
#: top TAIL_MAX_P share), and becomes the empirical quantile once the pairs reach the FAR itself
TAIL_EXCEEDANCES = 50
TAIL_MAX_P = 0.1
TAIL_MIN_PAIRS = int(TAIL_EXCEEDANCES / TAIL_MAX_P)


def cross_user_scores(emb: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores between every two different users: the max over their templates (what a claim of one
    user by the other's face would score). ``emb`` (T, D) L2-normalised, ``owner`` (T,) int user index
    0..U-1. Returns (scores (P,), user_a (P,), user_b (P,)) for all P = U(U-1)/2 pairs a < b."""
    owner = np.asarray(owner)
    order = np.argsort(owner, kind="stable")
    e, o = np.asarray(emb, np.float32)[order], owner[order]
    users, starts = np.unique(o, return_index=True)
    sim = e @ e.T
    if len(e) != len(users):   # several templates per user: max over each block
        sim = np.maximum.reduceat(np.maximum.reduceat(sim, starts, axis=0), starts, axis=1)
    a, b = np.triu_indices(len(users), k=1)
    return sim[a, b].astype(np.float64), a, b


@dataclass
class PopulationEstimate:
    """The deployment's own impostor statistics and the threshold they call for (one FAR)."""

    far: float
    users: int                       # enrolled users seen (before sampling)
    users_used: int
    pairs: int
    shipped: float                   # the calibration file's (strictest) threshold at this FAR
    floor: float                     # the most lenient reference population's threshold
    z: float                         # tail shape (heaviest reference)
    loc: float | None = None
    scale: float | None = None
    estimate: float | None = None    # loc + z * scale (or the empirical quantile, if higher)
    bound: float | None = None       # 95% upper bound (bootstrap over users)
    method: str = ""
    threshold: float = 0.0           # in use
    source: str = "shipped"          # shipped | self-calibrated
    note: str = ""
    computed_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = round(v, 6) if math.isfinite(v) else None   # JSON has no inf
        return d


def _transfer(scores: np.ndarray, z: float) -> tuple[float, float, float]:
    loc, scale = robust_loc_scale(scores)
    return loc + z * scale, loc, scale


def _pot(desc: np.ndarray, w: np.ndarray | None, far: float) -> tuple[float, float]:
    """Peaks over threshold with an exponential tail (generalised Pareto, shape 0) on scores sorted
    in decreasing order, optionally weighted: ``t(far) = u + beta * ln(p_u / far)`` with ``u`` the
    score exceeded by ``p_u`` of the pairs (``p_u`` = max(far, :data:`TAIL_EXCEEDANCES` / pairs), at
    most :data:`TAIL_MAX_P`) and ``beta`` the mean excess over ``u``. When the pairs are enough to see
    ``far`` itself (``p_u == far``) this is the empirical quantile. Returns (threshold, p_u)."""
    cw = np.cumsum(w, dtype=np.float64) if w is not None else np.arange(1, desc.size + 1, dtype=np.float64)
    total = cw[-1]
    p_u = min(max(far, TAIL_EXCEEDANCES / total), TAIL_MAX_P)
    k = int(np.searchsorted(cw, p_u * total))          # pairs[0..k] hold at least p_u of the weight
    k = min(k, desc.size - 1)
    u = float(desc[k])
    if p_u <= far * (1 + 1e-9):
        return float(np.nextafter(u, np.inf)), p_u
    ex = desc[:k + 1] - u
    beta = float(np.average(ex, weights=w[:k + 1]) if w is not None else ex.mean())
    return u + beta * math.log(p_u / far), p_u


def estimate(emb: np.ndarray, owner: np.ndarray, *, far: float, shipped: float, floor: float, z: float,
             min_users: int = MIN_USERS, max_users: int = MAX_USERS, bootstrap: int = BOOTSTRAP,
             seed: int = 0) -> PopulationEstimate:
    """Threshold at ``far`` for the population of these templates (see the module docstring).

    ``emb`` (T, D) L2-normalised templates, ``owner`` (T,) the user of each (any labels)."""
    owner = np.asarray(owner)
    _, idx = np.unique(owner, return_inverse=True)
    n = int(idx.max()) + 1 if idx.size else 0
    res = PopulationEstimate(far=far, users=n, users_used=0, pairs=0, shipped=float(shipped),
                             floor=float(min(floor, shipped)), z=float(z), threshold=float(shipped))
    if n < 2:
        res.note = "fewer than 2 enrolled users: the shipped threshold"
        return res
    rng = np.random.default_rng(seed)
    emb = np.asarray(emb, np.float32)
    if n > max_users:
        keep_users = rng.choice(n, max_users, replace=False)
        remap = -np.ones(n, np.int64)
        remap[keep_users] = np.arange(max_users)
        m = remap[idx] >= 0
        emb, idx, n_used = emb[m], remap[idx[m]], max_users
    else:
        n_used = n
    scores, a, b = cross_user_scores(emb, idx)
    res.users_used, res.pairs = n_used, int(scores.size)
    res.loc, res.scale = robust_loc_scale(scores)
    tail = scores.size >= TAIL_MIN_PAIRS
    order = np.argsort(-scores, kind="stable")
    desc, a, b = scores[order], a[order], b[order]
    if tail:
        est, p_u = _pot(desc, None, far)
        res.method = f"tail (exponential over the top {p_u:.2%} of pairs)" if p_u > far else "empirical"
    else:
        est = _transfer(scores, z)[0]
        res.method = "transfer (median + z * scale, z of the heaviest reference population)"
    # bootstrap over users: draw users with replacement; a pair counts as often as both its users were
    # drawn (the pairs of one user are correlated, so resampling pairs would understate the spread)
    boots = []
    for _ in range(bootstrap):
        cnt = np.bincount(rng.integers(0, n_used, n_used), minlength=n_used).astype(np.float64)
        w = cnt[a] * cnt[b]
        if np.count_nonzero(w) < 3:
            continue
        if tail:
            boots.append(_pot(desc, w, far)[0])
        else:
            sel = w > 0
            boots.append(_transfer(np.repeat(desc[sel], w[sel].astype(np.int64)), z)[0])
    bound = float(np.quantile(boots, 0.95)) if boots else float("inf")   # too few pairs: no bound
    res.estimate, res.bound = float(est), bound
    if n >= min_users and math.isfinite(bound):
        res.threshold = float(max(res.floor, bound))
    elif n >= MIN_USERS_TO_RAISE:   # too few users to lower it: shipped, raised when the estimate is higher
        res.threshold = float(max(res.shipped, est))
        res.note = (f"{n} users (< {min_users}): the shipped threshold, raised when the population's estimate "
                    f"is higher")
    else:
        res.threshold = float(res.shipped)
        res.note = f"{n} users (< {MIN_USERS_TO_RAISE}): too few pairs to estimate; the shipped threshold"
    res.source = "shipped" if res.threshold == res.shipped else "self-calibrated"
    return res


#: tail shape used when the calibration file has none (older files): heavier than any measured
#: reference (LFW 4.22, CK+ 4.50 at FAR 1e-4), so the estimate can only err strict
DEFAULT_Z = 5.0


def gallery_templates(gallery, *, max_users: int = MAX_USERS, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """Templates of (a seeded sample of at most ``max_users``) enrolled users through the gallery's
    public API (``list``, ``templates``): any backend. Returns (emb (T, D), owner (T,), users enrolled)."""
    from ..errors import GalleryError

    users = gallery.list()
    n = len(users)
    if n > max_users:
        rng = np.random.default_rng(seed)
        users = [users[i] for i in sorted(rng.choice(n, max_users, replace=False))]
    embs, owner = [], []
    for i, u in enumerate(users):
        try:
            _, _, m = gallery.templates(u)
        except GalleryError:       # erased meanwhile
            continue
        if len(m):
            embs.append(np.asarray(m, np.float32))
            owner += [i] * len(m)
    if not embs:
        return np.zeros((0, 1), np.float32), np.zeros(0, np.int64), n
    return np.concatenate(embs), np.asarray(owner), n


def for_gallery(gallery, policy, *, seed: int = 0) -> PopulationEstimate:
    """The identity threshold for this gallery's population at the policy's FAR (see the module
    docstring). A policy without self-calibration data (no ``identity.tail_shape`` / per-population
    thresholds in its file) can only raise the shipped threshold."""
    emb, owner, n = gallery_templates(gallery, seed=seed)
    shipped = float(policy.identity_threshold)
    floor = shipped if policy.identity_floor is None else float(policy.identity_floor)
    z = DEFAULT_Z if policy.identity_tail_z is None else float(policy.identity_tail_z)
    far = float(policy.identity_far) if policy.identity_far else 1e-4
    res = estimate(emb, owner, far=far, shipped=shipped, floor=floor, z=z, seed=seed)
    res.users = n
    return res


def summary(res: PopulationEstimate) -> dict:
    """What a Decision, ``/healthz`` and ``gallery info`` report (aggregate numbers only: no template)."""
    keys = ("threshold", "source", "far", "users", "pairs", "estimate", "bound", "shipped", "floor", "method", "note")
    d = res.to_dict()
    return {k: d[k] for k in keys if d.get(k) not in (None, "")}
