"""Shared fixtures: real models and real images from ../shared (SMILE2PAY_MODELS / SMILE2PAY_DATA).

``tests/unit``: no weights, no images (maths, parsing, the pure decision and stream state machine, storage on
synthetic vectors, CLI help and usage errors, crafted bad image files). ``tests/integration``: real weights and
real images. A unit file and its integration namesake share module-level helpers through ``tests/helpers.py``.

The pipeline is loaded once per test session. Tests never download anything.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("SMILE2PAY_MODELS", REPO.parent / "shared" / "models")).resolve()
DATA = Path(os.environ.get("SMILE2PAY_DATA", REPO.parent / "shared" / "data")).resolve()
os.environ["SMILE2PAY_MODELS"] = str(MODELS)
os.environ["SMILE2PAY_DATA"] = str(DATA)


def pytest_collection_modifyitems(session, config, items):
    """tests/unit needs no weights and no images; tests/integration runs on the real ones only: without them
    a run that collected an integration test is a setup error (never a silent skip)."""
    if any("integration" in item.path.parts for item in items) and (
            not (MODELS / "w600k_mbf.onnx").is_file() or not (DATA / "samples" / "t1.jpg").is_file()):
        raise pytest.UsageError(
            f"real models/data not found (SMILE2PAY_MODELS={MODELS}, SMILE2PAY_DATA={DATA}); "
            "the integration tests run on real weights and images only (tests/unit needs neither)")


def require_system(what: str, found: bool, hint: str) -> None:
    """Skip a test whose system dependency (Chromium, PostgreSQL...) is missing on a developer's
    machine; in CI (``SMILE2PAY_REQUIRE_SYSTEM_DEPS=1``, set by ``.ci/run``) a missing one fails."""
    if found:
        return
    msg = f"{what} not found ({hint})"
    if os.environ.get("SMILE2PAY_REQUIRE_SYSTEM_DEPS") == "1":
        pytest.fail(msg + "; .ci/run installs it", pytrace=False)
    pytest.skip(msg)


@contextlib.contextmanager
def serve_in_thread(app):
    """A real uvicorn server for ``app`` on a free 127.0.0.1 port, in a daemon thread, ready (its
    /healthz answers) when this yields ``(base_url, port)``; stopped on exit."""
    import threading

    import uvicorn

    from smile2pay_tools.bench.common import wait_healthy
    from smile2pay_tools.pg_cluster import free_port

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base, timeout=10.0)
    try:
        yield base, port
    finally:
        srv.should_exit = True
        th.join(timeout=10)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def pipeline():
    from smile2pay.config import Settings
    from smile2pay.pipeline import FacePipeline

    return FacePipeline(Settings.from_env(models=str(MODELS)))


@pytest.fixture(scope="session")
def deepface_people(data_dir) -> dict[str, list[str]]:
    """The deepface sample photos by subject (``samples/deepface/manifest.csv``): subject -> image paths."""
    import csv
    from collections import defaultdict

    by = defaultdict(list)
    with open(data_dir / "samples" / "deepface" / "manifest.csv", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            by[r["subject"]].append(str(data_dir / r["path"]))
    return dict(by)


@pytest.fixture(scope="session")
def t1_path(data_dir) -> Path:
    return data_dir / "samples" / "t1.jpg"


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL server for the session: initdb on a free port, unix socket and data in a
    temporary folder, run as an unprivileged user when the tests run as root (fsync off: test speed)."""
    from smile2pay_tools.pg_cluster import TempCluster, find_bindir

    require_system("PostgreSQL server (initdb)", find_bindir() is not None, "apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        require_system("psycopg 3", False, "pip install 'psycopg[binary]' (in the dev extra)")
    pg = TempCluster(fsync=False).start()
    yield pg
    pg.cleanup()


# ------------------------------------------------------------- tests/{unit,integration}/test_gallery_backends.py
@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    """A fresh gallery location: a sqlite:/// URL, or a new schema in the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'g'}"
    pg = request.getfixturevalue("pg_cluster")
    return pg.url(schema="t_" + uuid.uuid4().hex[:12])


@pytest.fixture()
def pg_url(pg_cluster):
    """A new schema in the session's PostgreSQL (the PostgreSQL-only tests)."""
    return pg_cluster.url(schema="t_" + uuid.uuid4().hex[:12])


# ------------------------------------------------------------- tests/{unit,integration}/test_imageio_bombs.py
@pytest.fixture(scope="module")
def png_bombs(tmp_path_factory):
    from helpers import BOMBS, write_zero_png

    folder = tmp_path_factory.mktemp("bombs")
    out = {}
    for name, (w, h, depth) in BOMBS.items():
        p = write_zero_png(folder / f"{name}.png", w, h, depth)
        assert p.stat().st_size <= 1024 * 1024, (name, p.stat().st_size)
        out[name] = p
    return out
