"""Crash test: kill -9 an enrolling process at random moments, then check the gallery.

The worker enrols users through the Gallery API from PRECOMPUTED REAL embeddings (LFW, w600k_mbf,
from ``results/lfw_embeddings.npz``; see gallery_embed_lfw.py), two templates per user (``neutral``
+ ``smile``), compacting every 25 users so that kills also land inside VACUUM/checkpoint. After
each acknowledged enrolment it writes ``ok <user>`` to its stdout pipe. The parent SIGKILLs it at a
random moment, reopens the gallery and checks:

* the gallery opens and ``check()`` passes (SQLite integrity; every DB template has its vector in
  the index and vice versa; every user has its templates: an enrolment is all or nothing);
* ``count`` == the enrolments acknowledged, or acknowledged + 1 when the kill fell between the
  commit and the acknowledgement (that user is then the one that was in flight) -- never fewer;
* 1:1 verification and 1:N identification of acknowledged users still work.

    nice python benchmarks/gallery_crash_test.py --kills 40 [--key] [--json benchmarks/results/gallery_crash.json]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KEY_HEX = "11" * 32


def load_users(npz: str | os.PathLike, n_users: int) -> tuple[list[str], np.ndarray]:
    """Users with >= 2 images: (ids, (n, 2, d) embeddings) for the first n_users."""
    z = np.load(npz)
    subj, emb = z["subjects"], z["emb"]
    ids, pairs, seen = [], [], {}
    for s, e in zip(subj, emb):
        seen.setdefault(str(s), []).append(e)
    for s, es in seen.items():
        if len(es) >= 2:
            ids.append(s)
            pairs.append(np.stack(es[:2]))
        if len(ids) >= n_users:
            break
    return ids, np.stack(pairs).astype(np.float32)


def worker(gallery: str, vecs_path: str, key: str | None, compact_every: int) -> int:
    from smile2pay.gallery import DuplicateIdentityError, Gallery

    data = np.load(vecs_path)
    ids, vecs = list(data["ids"]), data["vecs"]
    g = Gallery(gallery, fingerprint="crash-test", key=bytes.fromhex(key) if key else None)
    out = sys.stdout
    out.write("ready\n"); out.flush()
    done = 0
    for uid, v in zip(ids, vecs):
        uid = str(uid)
        if uid in g:
            continue
        try:
            g.enroll(uid, v, ["neutral", "smile"], check_duplicates=True)
        except DuplicateIdentityError:  # another LFW name matching an enrolled one: skipped, reported
            out.write(f"dup {uid}\n"); out.flush()
            continue
        out.write(f"ok {uid}\n"); out.flush()
        done += 1
        if compact_every and done % compact_every == 0:
            g.compact()
    out.write("finished\n"); out.flush()
    return 0


def check_gallery(gallery: str, ids: list[str], vecs: np.ndarray, acked: set[str], key: str | None,
                  dups: set[str] = frozenset()) -> dict:
    from smile2pay.gallery import Gallery

    with Gallery(gallery, fingerprint="crash-test", key=bytes.fromhex(key) if key else None) as g:
        rep = g.check()
        present = set(g.list())
        lost = acked - present
        extra = present - acked
        order = {u: i for i, u in enumerate(ids)}
        # an unacknowledged user may exist only if it is the one after the last acked (in flight)
        last = max((order[u] for u in acked | set(dups)), default=-1)
        extra_ok = all(order[u] == last + 1 for u in extra) and len(extra) <= 1
        for u in present:
            if len(g.get(u).templates) != 2:
                raise RuntimeError(f"partial enrolment of {u}")
        verify_ok = True
        for u in random.sample(sorted(present), min(5, len(present))):
            i = order[u]
            r = g.verify_identity(u, vecs[i, 1])
            top = g.identify(vecs[i, 0], k=1)
            verify_ok &= (r.score > 0.999) and bool(top) and top[0].user_id == u
        return {"count": g.count(), "acked": len(acked), "lost": len(lost), "extra": len(extra),
                "extra_is_in_flight": extra_ok, "templates": rep["templates"], "index": rep["index"],
                "check_ok": rep["ok"], "verify_ok": verify_ok}


def run(kills: int, npz: str, gallery: str | None = None, key: str | None = None, n_users: int = 5000,
        max_delay: float = 0.5, compact_every: int = 25, seed: int = 0, log=print) -> dict:
    rng = random.Random(seed)
    ids, vecs = load_users(npz, n_users)
    tmp = tempfile.mkdtemp(prefix="s2p-crash-")
    gallery = gallery or os.path.join(tmp, "gallery")
    vecs_path = os.path.join(tmp, "vecs.npz")
    np.savez(vecs_path, ids=np.array(ids), vecs=vecs)
    acked: set[str] = set()
    dups: set[str] = set()
    results = []
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for k in range(kills):
        cmd = [sys.executable, __file__, "--worker", "--gallery", gallery, "--vecs", vecs_path,
               "--compact-every", str(compact_every)] + (["--key-hex", key] if key else [])
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
        line = p.stdout.readline()
        if line.strip() != "ready":
            p.kill(); p.wait()
            raise RuntimeError(f"worker did not start: {line!r}")
        delay = rng.uniform(0.0, max_delay)
        time.sleep(delay)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        finished = False
        before = len(acked)
        for line in p.stdout.read().splitlines():
            if line.startswith("ok "):
                acked.add(line[3:])
            elif line.startswith("dup "):
                dups.add(line[4:])
            elif line == "finished":
                finished = True
        p.stdout.close()
        r = check_gallery(gallery, ids, vecs, acked, key, dups)
        r["new_acked_this_run"] = len(acked) - before
        # the in-flight user, if committed, is now acknowledged by the gallery itself
        r.update(kill=k, delay_s=round(delay, 3), finished=finished)
        ok = r["lost"] == 0 and r["extra_is_in_flight"] and r["check_ok"] and r["verify_ok"]
        r["ok"] = ok
        results.append(r)
        log(json.dumps(r))
        if r["extra"]:
            from smile2pay.gallery import Gallery
            with Gallery(gallery, fingerprint="crash-test", key=bytes.fromhex(key) if key else None) as g:
                acked |= set(g.list())
        if finished:
            break
    summary = {"kills": len(results), "all_ok": all(r["ok"] for r in results),
               "count_equals_acked": sum(r["extra"] == 0 for r in results),
               "count_equals_acked_plus_in_flight": sum(r["extra"] == 1 for r in results),
               "lost_acked_enrolments": sum(r["lost"] for r in results),
               "kills_after_progress": sum(r["new_acked_this_run"] > 0 or r["extra"] > 0 for r in results),
               "duplicates_skipped": len(dups),
               "final_users": results[-1]["count"] if results else 0, "encrypted": bool(key),
               "embeddings": "precomputed real LFW w600k_mbf embeddings through the Gallery API",
               "runs": results}
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="kill -9 crash test of the gallery")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--gallery")
    ap.add_argument("--vecs")
    ap.add_argument("--key-hex")
    ap.add_argument("--key", action="store_true", help="use an encrypted gallery")
    ap.add_argument("--compact-every", type=int, default=25)
    ap.add_argument("--kills", type=int, default=40)
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--max-delay", type=float, default=0.5)
    ap.add_argument("--npz", default=str(REPO / "results" / "lfw_embeddings.npz"))
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "gallery_crash.json"))
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.gallery, args.vecs, args.key_hex, args.compact_every)
    t0 = time.time()
    s = run(args.kills, args.npz, key=KEY_HEX if args.key else None, n_users=args.users,
            max_delay=args.max_delay, compact_every=args.compact_every,
            log=lambda m: print(m, file=sys.stderr))
    s["wall_s"] = round(time.time() - t0, 1)
    s["command"] = "python benchmarks/gallery_crash_test.py " + " ".join(argv or sys.argv[1:])
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(s, indent=2))
    print(json.dumps({k: v for k, v in s.items() if k != "runs"}, indent=2))
    return 0 if s["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
