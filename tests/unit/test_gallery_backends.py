"""The gallery API on both backends (embedded SQLite, PostgreSQL) where no embeddings are needed: typed
errors on bad inputs, URL validation, migrations recorded once."""
from __future__ import annotations

import uuid

import numpy as np
import pytest

from smile2pay.errors import GalleryError
from smile2pay.gallery import open_gallery

from helpers import FP, _open


# ------------------------------------------------------------------------------------ both backends
def test_bad_inputs_are_typed(url):
    g = _open(url, dim=8)
    for uid, v in [("", np.ones(8)), ("a\nb", np.ones(8)), ("u", np.ones(7)), ("u", np.zeros(8)),
                   ("u", np.full(8, np.nan)), ("u", "not a vector")]:
        with pytest.raises(GalleryError) as e:
            g.enroll(uid, v)
        assert e.value.code in ("GALLERY_BAD_USER_ID", "GALLERY_BAD_EMBEDDING")
    with pytest.raises(GalleryError) as e:
        g.enroll("u", np.ones(8), mode="merge")
    assert e.value.code == "GALLERY_BAD_MODE"
    with pytest.raises(GalleryError) as e:
        g.identify(np.ones(8), k=0)
    assert e.value.code == "GALLERY_BAD_K"
    assert g.identify(np.ones(8), k=3) == []
    g.close()
    with pytest.raises(GalleryError) as e:
        _open(url, fingerprint="sface:other", dim=8)
    assert e.value.code == "GALLERY_MODEL_MISMATCH"


# ------------------------------------------------------------------------------------ PostgreSQL only
def test_migrations_are_recorded_once(pg_url, pg_cluster):
    import psycopg

    from smile2pay.gallery.postgres import SCHEMA_VERSION, parse_url

    _open(pg_url, dim=8).close()
    _open(pg_url, dim=8).close()
    conninfo, schema = parse_url(pg_url)
    with psycopg.connect(conninfo) as c:
        rows = c.execute(f"SELECT version FROM {schema}.schema_version").fetchall()
    assert rows == [(SCHEMA_VERSION,)]
    with pytest.raises(GalleryError) as e:
        open_gallery(pg_cluster.url(schema="t_missing_" + uuid.uuid4().hex[:6]), create=False)
    assert e.value.code == "GALLERY_NOT_FOUND"


def test_gallery_urls_are_validated(tmp_path):
    from smile2pay.gallery.postgres import parse_url, redact

    with pytest.raises(GalleryError) as e:
        open_gallery("sqlite://")
    assert e.value.code == "GALLERY_BAD_URL"
    with pytest.raises(GalleryError) as e:
        parse_url("postgresql://u@h/db?schema=Robert');DROP")
    assert e.value.code == "GALLERY_BAD_URL"
    assert parse_url("postgresql://u@h:5/db?schema=s1&sslmode=require") == ("postgresql://u@h:5/db?sslmode=require", "s1")
    assert parse_url("postgresql://u@h/db")[1] == "smile2pay"
    assert redact("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    g = open_gallery(tmp_path / "plain_path", fingerprint=FP, dim=8)      # a plain path is the embedded gallery
    assert (tmp_path / "plain_path" / "gallery.db").exists() and not hasattr(g, "pool")
    g.close()
