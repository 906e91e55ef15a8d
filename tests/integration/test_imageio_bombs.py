"""Decompression bombs through the CLI: a PNG bomb is refused before any decoder sees the pixels, within a
memory bound (the bombs are crafted as in tests/unit/test_imageio_bombs.py, by tests/helpers.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import BOMBS

REPO = Path(__file__).resolve().parents[2]
CLI_MAX_RSS_KIB = 1024 * 1024  # 1 GiB: the models alone take ~200 MB; a decoded 30000x30000 takes ~3.6 GB


_WRAPPER = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr[-4000:],
                  "wall_s": time.perf_counter() - t,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def run_cli_measured(*args: str) -> dict:
    """Run ``python -m smile2pay.cli ARGS`` under a fresh wrapper process, so that the wrapper's
    RUSAGE_CHILDREN is the peak RSS of that one CLI child (ours covers every child we ever waited on)."""
    cmd = [sys.executable, "-c", _WRAPPER, sys.executable, "-m", "smile2pay.cli", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=600)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_cli_analyze_png_bomb(png_bombs, name):
    res = run_cli_measured("analyze", str(png_bombs[name]), "--json")
    assert "Traceback" not in res["stderr"], res["stderr"]
    assert res["rc"] == 2, (res["rc"], res["stdout"][:500], res["stderr"])
    payload = json.loads(res["stdout"])
    err = payload["images"][0]["error"]
    assert err["code"] == "IMAGE_TOO_LARGE" and err["type"] == "ImageError", err
    rss_mb = res["maxrss_kib"] / 1024
    assert res["maxrss_kib"] < CLI_MAX_RSS_KIB, f"{name}: CLI peak RSS {rss_mb:.0f} MB ({res['wall_s']:.1f}s)"
