"""The HTTP service's limits, safe by default: bounded bodies for every content type (chunked
uploads included), per-frame limits in multipart, typed errors for hostile JSON and broken multipart,
scoped API keys (kiosk: verify only; admin: everything), the unlock route and per-client rate limits.

A real uvicorn server on 127.0.0.1, a real httpx client, a real Smile2Pay on a temporary gallery.
"""
import base64
import json

import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
ws_sync = pytest.importorskip("websockets.sync.client")

from smile2pay import Smile2Pay  # noqa: E402
from smile2pay.errors import Smile2PayError  # noqa: E402
from smile2pay.server.app import Limits, RateLimiter, create_app  # noqa: E402

from conftest import serve_in_thread  # noqa: E402

ADMIN = "admin-key-0123456789abcdef"
KIOSK = "kiosk-key-0123456789abcdef"
A = {"X-API-Key": ADMIN}
K = {"X-API-Key": KIOSK}
MB = 1024 * 1024


@pytest.fixture(scope="module")
def s2p(tmp_path_factory, models_dir):
    from smile2pay.config import QualitySettings, Settings
    from smile2pay.decision.lockout import GuardSettings
    from smile2pay.pipeline import FacePipeline

    pipe = FacePipeline(Settings.from_env(models=str(models_dir), quality=QualitySettings(
        min_interocular_px=12, max_brightness=235, max_clipped_fraction=0.4)))
    s = Smile2Pay(tmp_path_factory.mktemp("lim") / "g", pipeline=pipe,
                  guard_settings=GuardSettings(max_failures=2))
    yield s
    s.close()


@pytest.fixture(scope="module")
def default_server(s2p):
    """The service as ``create_app(s2p, key)`` builds it: the production default limits."""
    with serve_in_thread(create_app(s2p, ADMIN)) as (base, _):
        yield base


@pytest.fixture(scope="module")
def scoped(s2p):
    """An admin key and a kiosk key (a generous rate limit: these tests are not about it)."""
    app = create_app(s2p, ADMIN, Limits(verify_per_minute=10_000), kiosk_api_key=KIOSK)
    with serve_in_thread(app) as (base, port):
        yield base, port


@pytest.fixture(scope="module")
def limited(s2p):
    """3 verify requests per minute per client."""
    app = create_app(s2p, ADMIN, Limits(verify_per_minute=3), kiosk_api_key=KIOSK)
    with serve_in_thread(app) as (base, port):
        yield base, port


@pytest.fixture(scope="module")
def smile(data_dir):
    from smile2pay_tools.bench.fleet import ck_smile_pairs

    return ck_smile_pairs(data_dir)


def b64(path) -> str:
    return base64.b64encode(open(path, "rb").read()).decode()


def typed(r, status: int, code: str) -> dict:
    """Every error is the project's typed JSON: {"error": {"code", "message"}}."""
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code and isinstance(body["error"]["message"], str), body
    return body


# -- 1. a chunked multipart upload is bounded by the bytes actually read ----------------------------

class Counted:
    """A request body sent chunked (no Content-Length), counting what the client managed to send."""

    def __init__(self, head: bytes, total: int, tail: bytes, chunk: int = 256 * 1024) -> None:
        self.head, self.total, self.tail, self.chunk = head, total, tail, chunk
        self.sent = 0

    def __iter__(self):
        block = b"\xff" * self.chunk
        self.sent += len(self.head)
        yield self.head
        while self.sent < self.total:
            self.sent += len(block)
            yield block
        self.sent += len(self.tail)
        yield self.tail


def _post_counted(url: str, headers: dict, body: Counted):
    try:
        return httpx.post(url, headers=headers, content=body, timeout=60)
    except httpx.TransportError:   # the server answered and closed while the client was still writing
        return None


def test_chunked_multipart_cannot_bypass_the_body_limit(default_server):
    boundary = "s2pboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\nu\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"frames\"; filename=\"a.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    body = Counted(head, 200 * MB, f"\r\n--{boundary}--\r\n".encode())
    r = _post_counted(default_server + "/v1/verify",
                      {**A, "Content-Type": f"multipart/form-data; boundary={boundary}"}, body)
    limit = Limits().max_body_bytes
    print(f"chunked 200 MB multipart: client sent {body.sent} bytes before the server refused "
          f"(limit {limit}); status {None if r is None else r.status_code}")
    # the server stops reading at the limit: what the client got out is the limit plus socket buffers
    assert body.sent < limit + 16 * MB
    if r is not None:
        typed(r, 413, "REQUEST_TOO_LARGE")
    # the same on the JSON path, and on enrol
    body = Counted(b'{"user_id": "u", "frames": ["', 200 * MB, b'"]}')
    r = _post_counted(default_server + "/v1/enroll", {**A, "Content-Type": "application/json"}, body)
    assert body.sent < limit + 16 * MB
    if r is not None:
        typed(r, 413, "REQUEST_TOO_LARGE")
    # no key: refused before reading anything, the connection closed
    body = Counted(head, 200 * MB, b"--")
    r = _post_counted(default_server + "/v1/verify",
                      {"Content-Type": f"multipart/form-data; boundary={boundary}"}, body)
    print(f"chunked 200 MB without a key: client sent {body.sent} bytes; "
          f"status {None if r is None else r.status_code}")
    assert body.sent < 16 * MB
    if r is not None:
        typed(r, 401, "UNAUTHORIZED")
    # the server is still healthy and answers the next request
    assert httpx.get(default_server + "/healthz", timeout=10).status_code == 200


def test_chunked_upload_gets_its_413_answer(default_server):
    """A chunked body a little over the limit: the client finishes sending and reads the 413."""
    boundary = "s2pb2"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"frames\"; filename=\"a.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    body = Counted(head, Limits().max_body_bytes + MB, f"\r\n--{boundary}--\r\n".encode())
    r = _post_counted(default_server + "/v1/verify",
                      {**A, "Content-Type": f"multipart/form-data; boundary={boundary}"}, body)
    assert r is not None
    typed(r, 413, "REQUEST_TOO_LARGE")


def test_client_leaving_mid_body_is_no_internal_error(default_server, caplog):
    """A client that sends part of its body and disconnects is a bad request, not an internal error logged
    with a traceback."""
    import logging
    import socket
    import time
    from urllib.parse import urlsplit

    u = urlsplit(default_server)
    caplog.set_level(logging.INFO)
    for path in ("/v1/verify", "/v1/enroll", "/v1/identify"):
        with socket.create_connection((u.hostname, u.port), timeout=10) as s:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {ADMIN}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"user_id\": ".encode())
            time.sleep(0.2)
    time.sleep(0.5)
    assert httpx.get(default_server + "/healthz", timeout=10).status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]


# -- 2. the per-frame limit holds for multipart files too -------------------------------------------

def test_multipart_frame_over_the_frame_limit_is_413(default_server):
    big = b"\xff\xd8" + b"\x00" * (20 * MB)          # 20 MB "frame": under the body limit, over the frame limit
    r = httpx.post(default_server + "/v1/verify", headers=A, timeout=60, data={"user_id": "u"},
                   files=[("frames", ("a.jpg", big, "image/jpeg"))])
    typed(r, 413, "REQUEST_TOO_LARGE")
    r = httpx.post(default_server + "/v1/enroll", headers=A, timeout=60, data={"user_id": "u"},
                   files=[("images", ("a.jpg", big, "image/jpeg"))])
    typed(r, 413, "REQUEST_TOO_LARGE")


# -- 3. hostile JSON nesting is a typed 400, not a 500 ----------------------------------------------

@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    b'{"user_id": "u", "frames": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
])
def test_deeply_nested_json_is_a_typed_400(default_server, body):
    for path in ("/v1/verify", "/v1/enroll", "/v1/identify"):
        r = httpx.post(default_server + path, headers={**A, "Content-Type": "application/json"}, content=body,
                       timeout=30)
        typed(r, 400, "REQUEST_INVALID")


# -- 4. multipart parsing errors are typed ----------------------------------------------------------

def test_multipart_errors_are_typed(default_server):
    url = default_server + "/v1/verify"
    # no boundary
    r = httpx.post(url, headers={**A, "Content-Type": "multipart/form-data"}, content=b"garbage", timeout=30)
    typed(r, 400, "REQUEST_INVALID")
    # broken part headers
    r = httpx.post(url, headers={**A, "Content-Type": "multipart/form-data; boundary=xx"},
                   content=b"--xx\r\nno-colon-here\r\n\r\ndata\r\n--xx--\r\n", timeout=30)
    typed(r, 400, "REQUEST_INVALID")
    # too many files
    files = [("frames", (f"{i}.jpg", b"\xff\xd8abc", "image/jpeg")) for i in range(Limits().max_frames + 2)]
    r = httpx.post(url, headers=A, data={"user_id": "u"}, files=files, timeout=30)
    typed(r, 400, "REQUEST_INVALID")
    # too many fields
    r = httpx.post(url, headers=A, data={f"f{i}": "x" for i in range(100)},
                   files=[("frames", ("a.jpg", b"\xff\xd8abc", "image/jpeg"))], timeout=30)
    typed(r, 400, "REQUEST_INVALID")
    # a text field far over its size
    r = httpx.post(url, headers=A, data={"user_id": "u" * (2 * MB)},
                   files=[("frames", ("a.jpg", b"\xff\xd8abc", "image/jpeg"))], timeout=30)
    typed(r, 400, "REQUEST_INVALID")
    # no frames at all
    r = httpx.post(url, headers=A, data={"user_id": "u"}, files=[("other", ("a.jpg", b"x", "image/jpeg"))],
                   timeout=30)
    typed(r, 400, "REQUEST_INVALID")


def test_other_framework_errors_are_typed(default_server):
    r = httpx.put(default_server + "/v1/verify", headers=A, timeout=10)
    typed(r, 405, "METHOD_NOT_ALLOWED")
    r = httpx.get(default_server + "/v1/nothing", headers=A, timeout=10)
    typed(r, 404, "NOT_FOUND")
    r = httpx.post(default_server + "/v1/verify", timeout=10)
    typed(r, 401, "UNAUTHORIZED")


# -- 5. scoped keys ---------------------------------------------------------------------------------

def test_kiosk_key_can_only_verify(scoped):
    base, _ = scoped
    img = base64.b64encode(b"\xff\xd8abc").decode()
    for method, path, body in [("POST", "/v1/enroll", {"user_id": "u", "images": [img]}),
                               ("POST", "/v1/identify", {"images": [img]}),
                               ("DELETE", "/v1/users/u", None),
                               ("POST", "/v1/users/u/unlock", None),
                               ("GET", "/v1/nothing", None)]:
        r = httpx.request(method, base + path, headers=K, json=body, timeout=30)
        typed(r, 403, "FORBIDDEN")
        # bearer form too
        r = httpx.request(method, base + path, headers={"Authorization": f"Bearer {KIOSK}"}, json=body,
                          timeout=30)
        typed(r, 403, "FORBIDDEN")
    # verify is the kiosk's: it reaches the route (a bad body is a 400, not 401/403)
    r = httpx.post(base + "/v1/verify", headers=K, json={"frames": [img]}, timeout=30)
    typed(r, 400, "REQUEST_INVALID")
    r = httpx.post(base + "/v1/verify", headers={"Authorization": f"Bearer {KIOSK}"},
                   json={"user_id": "nobody", "frames": [img]}, timeout=30)
    typed(r, 400, "IMAGE_UNREADABLE")
    # the admin key can do everything, as the single key did before
    r = httpx.post(base + "/v1/identify", headers=A, json={"images": [img]}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "IMAGE_UNREADABLE"
    typed(httpx.delete(base + "/v1/users/nobody", headers=A, timeout=30), 404, "GALLERY_USER_NOT_FOUND")
    # no key / a wrong key: 401 everywhere
    typed(httpx.post(base + "/v1/verify", json={}, timeout=10), 401, "UNAUTHORIZED")
    typed(httpx.post(base + "/v1/enroll", headers={"X-API-Key": KIOSK + "x"}, json={}, timeout=10),
          401, "UNAUTHORIZED")


def _ws_start(port: int, key: str, user: str = "nobody-ws", suffix: str = "") -> list[dict]:
    msgs = []
    with ws_sync.connect(f"ws://127.0.0.1:{port}/v1/stream{suffix}", open_timeout=10) as ws:
        ws.send(json.dumps({"type": "start", "api_key": key, "user_id": user,
                            "options": {"timeout_s": 1}}))
        try:
            while True:
                msgs.append(json.loads(ws.recv(timeout=15)))
                if msgs[-1]["type"] in ("final", "error"):
                    break
        except Exception:
            pass
    return msgs


def test_kiosk_key_opens_the_stream(scoped):
    _, port = scoped
    for key in (KIOSK, ADMIN):
        msgs = _ws_start(port, key)
        assert msgs and msgs[0]["type"] == "started", msgs
        assert msgs[-1]["type"] == "final", msgs
    msgs = _ws_start(port, "wrong-key-0123456789abcdef")
    assert msgs[0]["type"] == "error" and msgs[0]["error"]["code"] == "UNAUTHORIZED"


def test_key_configuration_is_checked(s2p):
    create_app(s2p, ADMIN)                                   # the admin key alone: as before
    create_app(s2p, ADMIN, kiosk_api_key=None)
    for bad in ("short", ADMIN):                             # too short, or the admin key itself
        with pytest.raises(Smile2PayError) as e:
            create_app(s2p, ADMIN, kiosk_api_key=bad)
        assert e.value.code == "CONFIG_INVALID"


# -- 6. unlock --------------------------------------------------------------------------------------

def test_admin_unlocks_a_locked_out_user(scoped, smile, data_dir):
    base, _ = scoped
    owner, other = smile[0], smile[1]
    r = httpx.post(base + "/v1/enroll", headers=A, timeout=60,
                   json={"user_id": owner["subject"], "images": [b64(data_dir / owner["neutral_path"])],
                         "kind": "neutral"})
    assert r.status_code == 200, r.text
    wrong = [b64(data_dir / other["neutral_path"]), b64(data_dir / other["peak_path"])]
    reasons = []
    for _ in range(3):   # max_failures=2: someone else's face twice, then the user is locked out
        r = httpx.post(base + "/v1/verify", headers=K, timeout=60, json={"user_id": owner["subject"], "frames": wrong})
        assert r.status_code == 200, r.text
        reasons.append(r.json()["reasons"])
    assert reasons[-1] == ["LOCKED_OUT"], reasons
    # the kiosk key cannot unlock
    typed(httpx.post(base + f"/v1/users/{owner['subject']}/unlock", headers=K, timeout=30), 403, "FORBIDDEN")
    r = httpx.post(base + f"/v1/users/{owner['subject']}/unlock", headers=A, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"user_id": owner["subject"], "was_locked": True}
    r = httpx.post(base + "/v1/verify", headers=K, timeout=60, json={"user_id": owner["subject"], "frames": wrong})
    assert "LOCKED_OUT" not in r.json()["reasons"], r.json()
    # unlocking a user who is not locked: fine, was_locked false
    r = httpx.post(base + "/v1/users/not-locked-user/unlock", headers=A, timeout=30)
    assert r.status_code == 200 and r.json() == {"user_id": "not-locked-user", "was_locked": False}
    # a bad user id: typed 400
    r = httpx.post(base + "/v1/users/%20/unlock", headers=A, timeout=30)
    assert r.status_code == 400 and set(r.json()) == {"error"}, r.text


# -- 7. per-client rate limit on verify -------------------------------------------------------------

def test_verify_is_rate_limited_per_client(limited):
    base, port = limited
    for _ in range(3):
        r = httpx.post(base + "/v1/verify", headers=K, json={}, timeout=30)
        typed(r, 400, "REQUEST_INVALID")
    r = httpx.post(base + "/v1/verify", headers=K, json={}, timeout=30)
    typed(r, 429, "RATE_LIMITED")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # refused before any work: a big body is not read either
    r = httpx.post(base + "/v1/verify", headers=K, content=b"x" * (3 * MB), timeout=30)
    typed(r, 429, "RATE_LIMITED")
    # the live stream counts against the same budget
    msgs = _ws_start(port, KIOSK)
    assert msgs[0]["type"] == "error" and msgs[0]["error"]["code"] == "RATE_LIMITED", msgs
    # another client (here: the other key from the same address) has its own budget
    r = httpx.post(base + "/v1/verify", headers=A, json={}, timeout=30)
    typed(r, 400, "REQUEST_INVALID")
    # other routes are not counted
    r = httpx.post(base + "/v1/identify", headers=A, json={}, timeout=30)
    typed(r, 400, "REQUEST_INVALID")


def test_rate_limiter_refills_and_forgets():
    now = [0.0]
    rl = RateLimiter(60, max_clients=2, clock=lambda: now[0])
    assert all(rl.check("a") == 0.0 for _ in range(60))
    wait = rl.check("a")
    assert 0.9 <= wait <= 1.01                       # one request a second comes back
    now[0] += 1.0
    assert rl.check("a") == 0.0 and rl.check("a") > 0
    assert rl.check("b") == 0.0 and rl.check("c") == 0.0     # "a" is forgotten (max_clients=2)
    assert len(rl) == 2
    assert RateLimiter(0).check("x") == 0.0          # 0: no limit
