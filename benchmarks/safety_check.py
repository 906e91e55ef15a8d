"""Safe-by-default figures (issue 16), measured from a fresh gallery on real faces, printed and written as JSON:

1. bytes of a stored embedding found in any file of a gallery created with defaults (no key configured);
2. bytes of an erased user (template, id) left outside the audit log, for Smile2Pay.remove and CLI `remove`;
3. peak RSS and exit code of `smile2pay analyze` on a 30000x30000 PNG bomb (854 KB) and a 1-bit 40000x40000 PNG;
4. how many of 16 concurrent impostor verifies on one user are evaluated before the lockout (limit 5).

    python benchmarks/safety_check.py [--out benchmarks/results/safety_check.json]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from pathlib import Path

import numpy as np

WRAPPER = r"""
import json, resource, subprocess, sys
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"rc": p.returncode, "stdout": p.stdout, "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def zero_png(path: Path, w: int, h: int, depth: int = 8) -> Path:
    """A PNG of zeros written chunk by chunk (the writer never holds the image)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    row = b"\x00" * (1 + (w * depth + 7) // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def scan(folder: Path, needles: list[bytes], skip=("audit.jsonl",)) -> int:
    n = 0
    for p in folder.rglob("*"):
        if p.is_file() and p.name not in skip:
            blob = p.read_bytes()
            n += sum(blob.count(x) * len(x) for x in needles)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results/safety_check.json")
    args = ap.parse_args()
    for k in ("SMILE2PAY_GALLERY_KEY", "SMILE2PAY_GALLERY_KEY_FILE", "SMILE2PAY_GALLERY_PLAINTEXT"):
        os.environ.pop(k, None)
    from smile2pay import Smile2Pay
    from smile2pay.config import QualitySettings, Settings, data_dir
    from smile2pay.decision.lockout import GuardSettings

    root = data_dir()
    rows = [r for r in csv.DictReader(open(root / "ckplus_neutral_peak48" / "pairs_neutral_peak.csv"))
            if r["is_smile_au6_au12"] == "1"]
    ck = {}
    for r in rows:
        ck.setdefault(r["subject"], (str(root / r["neutral_path"]), str(root / r["peak_path"])))
    subjects = list(ck)
    settings = Settings.from_env(quality=QualitySettings(min_interocular_px=12, max_brightness=235,
                                                         max_clipped_fraction=0.4))
    out: dict = {"benchmark": "safety_check", "date": time.strftime("%Y-%m-%d"),
                 "command": "python benchmarks/safety_check.py"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 1. defaults: encrypted
        g = tmp / "g"
        with Smile2Pay(g, settings=settings, guard_settings=GuardSettings(max_failures=5)) as s2p:
            users = []
            for s in subjects[:8]:
                try:
                    s2p.enroll(s, [ck[s][0]], kind="neutral")
                    users.append(s)
                except Exception:   # noqa: BLE001 - a frame failing a gate
                    pass
            vecs = [np.asarray(s2p.gallery.templates(u)[2][0], "<f4").tobytes() for u in users]
            needles = [v[i:i + 32] for v in vecs for i in range(0, len(v), 256)]
            out["default_gallery"] = {"users": len(users), "encrypted": s2p.gallery.encrypted,
                                      "key_file": s2p.gallery.key_source and Path(s2p.gallery.key_source).name,
                                      "key_file_mode": oct(os.stat(g / "gallery.key").st_mode & 0o777),
                                      "embedding_bytes_found": scan(g, needles)}
            # 4. 16 concurrent impostor verifies on one user
            victim, attacker = users[0], subjects[-1]
            res, barrier = [], threading.Barrier(16)

            def attack():
                barrier.wait()
                res.append(s2p.verify(victim, list(ck[attacker])))
            ts = [threading.Thread(target=attack) for _ in range(16)]
            [t.start() for t in ts]
            [t.join() for t in ts]
            out["lockout"] = {"concurrent_attempts": 16, "max_failures": 5,
                              "evaluated": sum("LOCKED_OUT" not in d.reasons for d in res),
                              "approved": sum(d.approved for d in res)}
            # 2a. erasure through the API, after failures put the user's id in the lockout table
            uid_api = users[1]
            for _ in range(2):
                s2p.verify(uid_api, list(ck[attacker]))
            tmpl = np.asarray(s2p.gallery.templates(uid_api)[2][0], "<f4").tobytes()
            s2p.remove(uid_api)
        erase = {"api": scan(g, [tmpl[i:i + 32] for i in range(0, len(tmpl), 256)] + [uid_api.encode()])}
        # 2b. erasure through the CLI
        uid_cli = users[2]
        with Smile2Pay(g, settings=settings) as s2p:
            tmpl = np.asarray(s2p.gallery.templates(uid_cli)[2][0], "<f4").tobytes()
            s2p.verify(uid_cli, list(ck[attacker]))
        p = subprocess.run([sys.executable, "-m", "smile2pay.cli", "remove", "--gallery", str(g), uid_cli, "--json"],
                           capture_output=True, text=True)
        erase["cli"] = scan(g, [tmpl[i:i + 32] for i in range(0, len(tmpl), 256)] + [uid_cli.encode()])
        erase["cli_exit"] = p.returncode
        out["erasure_bytes_outside_audit"] = erase
        # 3. decompression bombs
        bombs = {}
        for name, (w, h, d) in {"png_30000x30000_8bit": (30000, 30000, 8),
                                "png_40000x40000_1bit": (40000, 40000, 1)}.items():
            f = zero_png(tmp / f"{name}.png", w, h, d)
            t = time.perf_counter()
            r = json.loads(subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-m", "smile2pay.cli",
                                           "analyze", str(f), "--json"], capture_output=True, text=True).stdout)
            res_json = json.loads(r["stdout"]) if r["stdout"].strip() else {}
            code = (res_json.get("error") or {}).get("code") or \
                ((res_json.get("images") or [{}])[0].get("error") or {}).get("code")
            bombs[name] = {"file_kb": round(f.stat().st_size / 1024), "exit": r["rc"], "code": code,
                           "peak_rss_mb": round(r["maxrss_kib"] / 1024, 1), "wall_s": round(time.perf_counter() - t, 2)}
        out["decompression_bombs"] = bombs
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
