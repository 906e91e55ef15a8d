"""The HTTP service: a real uvicorn server on 127.0.0.1 and a real HTTP client (httpx)."""
import base64
import csv

import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from smile2pay import Smile2Pay  # noqa: E402
from smile2pay.server.app import Limits, create_app  # noqa: E402

from conftest import serve_in_thread  # noqa: E402

KEY = "test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory, models_dir):
    from smile2pay.config import QualitySettings, Settings
    from smile2pay.pipeline import FacePipeline

    pipe = FacePipeline(Settings.from_env(models=str(models_dir), quality=QualitySettings(
        min_interocular_px=12, max_brightness=235, max_clipped_fraction=0.4)))
    s2p = Smile2Pay(tmp_path_factory.mktemp("srv") / "g", pipeline=pipe)
    app = create_app(s2p, KEY, Limits(max_body_bytes=2_000_000, max_frames=8))
    with serve_in_thread(app) as (base, _):
        yield base, s2p
    s2p.close()


@pytest.fixture(scope="module")
def smile(data_dir):
    with open(data_dir / "ckplus_neutral_peak48" / "pairs_neutral_peak.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["is_smile_au6_au12"] == "1"]
    return rows


def b64(path) -> str:
    return base64.b64encode(open(path, "rb").read()).decode()


H = {"X-API-Key": KEY}


def test_health_and_auth(server):
    base, _ = server
    h = httpx.get(base + "/healthz").json()
    assert h["ok"] is True
    # the one identity threshold in use, where it comes from, and the population estimate behind it
    assert h["identity"]["threshold"] >= h["identity"]["floor"] and h["identity"]["source"] in ("shipped",
                                                                                                 "self-calibrated")
    assert h["identity"]["users"] == h["users"]
    r = httpx.post(base + "/v1/verify", json={})
    assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"
    r = httpx.post(base + "/v1/verify", json={}, headers={"Authorization": "Bearer wrong-key-xxxxxxxx"})
    assert r.status_code == 401


def test_enroll_verify_delete_over_http(server, smile, data_dir):
    base, _ = server
    r0 = smile[0]
    r = httpx.post(base + "/v1/enroll", headers=H, timeout=60,
                   json={"user_id": r0["subject"], "images": [b64(data_dir / r0["neutral_path"])], "kind": "neutral"})
    assert r.status_code == 200, r.text
    frames = [b64(data_dir / r0["neutral_path"]), b64(data_dir / r0["peak_path"])]
    r = httpx.post(base + "/v1/verify", headers=H, timeout=60,
                   json={"user_id": r0["subject"], "frames": frames, "nonce": "n-http-1"})
    assert r.status_code == 200
    d = r.json()
    assert set(d) >= {"approved", "reasons", "identity", "au", "liveness", "frames", "timings_ms"}
    assert d["identity"]["all_frames_match"] is True
    # the same request again: its nonce was used
    r = httpx.post(base + "/v1/verify", headers=H, timeout=60,
                   json={"user_id": r0["subject"], "frames": frames, "nonce": "n-http-1"})
    assert r.json()["reasons"] == ["REPLAY"]
    # multipart works too
    files = [("frames", ("a.png", open(data_dir / r0["neutral_path"], "rb").read(), "image/png")),
             ("frames", ("b.png", open(data_dir / r0["peak_path"], "rb").read(), "image/png"))]
    r = httpx.post(base + "/v1/verify", headers=H, timeout=60, data={"user_id": r0["subject"]}, files=files)
    assert r.status_code == 200 and r.json()["approved"] == d["approved"]
    r = httpx.delete(base + f"/v1/users/{r0['subject']}", headers=H)
    assert r.status_code == 200 and r.json()["templates"] == 1
    r = httpx.post(base + "/v1/verify", headers=H, timeout=60, json={"user_id": r0["subject"], "frames": frames})
    assert r.json()["reasons"] == ["NOT_ENROLLED"]
    r = httpx.delete(base + f"/v1/users/{r0['subject']}", headers=H)
    assert r.status_code == 404 and r.json()["error"]["code"] == "GALLERY_USER_NOT_FOUND"


@pytest.mark.parametrize("body,code", [
    (b"{not json", "REQUEST_INVALID"),
    (b"[1, 2]", "REQUEST_INVALID"),
    (b'{"user_id": "u", "frames": "abc"}', "REQUEST_INVALID"),
    (b'{"user_id": "u", "frames": ["%%%not-base64"]}', "REQUEST_INVALID"),
    (b'{"user_id": "u", "frames": ["aGVsbG8="]}', "IMAGE_UNREADABLE"),
    (b'{"frames": ["aGVsbG8="]}', "REQUEST_INVALID"),
    (b'{"user_id": "u", "frames": ["aGVsbG8="], "require": "AU6+smile"}', "RULE_INVALID"),
    (b'{"user_id": "u", "frames": ["aGVsbG8=", "aGVsbG8=", "aGVsbG8=", "aGVsbG8=", "aGVsbG8=", "aGVsbG8=", '
     b'"aGVsbG8=", "aGVsbG8=", "aGVsbG8="]}', "REQUEST_INVALID"),
    # a lone surrogate (valid JSON, not text): in the error's details / as a nonce (were 500s)
    (b'{"user_id": "u", "frames": ["aGVsbG8="], "require": "\\ud800"}', "RULE_INVALID"),
    (b'{"user_id": "u", "frames": ["aGVsbG8="], "nonce": "\\udc80"}', "REQUEST_INVALID"),
])
def test_malformed_requests_get_json_errors(server, body, code):
    base, _ = server
    r = httpx.post(base + "/v1/verify", headers={**H, "Content-Type": "application/json"}, content=body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code


def test_odd_enrol_fields_and_list_bounds_are_typed(server, smile, data_dir):
    """``"kind": null`` / a surrogate kind, and a list offset no database takes: 400s (were 500s)."""
    base, _ = server
    image = b64(data_dir / smile[1]["neutral_path"]).encode()     # a real face: the kind is what is refused
    for kind, code in ((b"null", "REQUEST_INVALID"), (b'"\\ud800"', "GALLERY_BAD_KIND")):
        body = b'{"user_id": "odd-kind", "images": ["' + image + b'"], "kind": ' + kind + b"}"
        r = httpx.post(base + "/v1/enroll", headers={**H, "Content-Type": "application/json"}, content=body, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text
    # a request id goes into the audit record as is: an over-long one is refused before any work
    r = httpx.post(base + "/v1/verify", headers={**H, "Content-Type": "application/json", "X-Request-ID": "r" * 200},
                   content=b'{"user_id": "odd-kind", "frames": ["' + image + b'"]}', timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "REQUEST_INVALID", r.text
    for offset in ("9223372036854775808", "1" + "0" * 30):
        r = httpx.get(base + "/v1/users", params={"offset": offset}, headers=H, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "REQUEST_INVALID", r.text


def test_body_size_limit(server):
    base, _ = server
    big = b'{"user_id": "u", "frames": ["' + b"A" * 2_100_000 + b'"]}'
    r = httpx.post(base + "/v1/verify", headers={**H, "Content-Type": "application/json"}, content=big, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "REQUEST_TOO_LARGE"


def test_unknown_route_is_json(server):
    base, _ = server
    r = httpx.get(base + "/v1/nothing", headers=H)
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
