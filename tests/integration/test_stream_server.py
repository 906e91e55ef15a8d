"""The live stream over HTTP: a real uvicorn server, a real WebSocket client, real CK+ clips;
and the kiosk page driven by headless Chromium with a fake camera fed from an MJPEG file.

The Chromium test skips locally when chromium/chromedriver are missing and fails in CI
(``require_system``). Its screenshot at the smile step is saved in the pytest tmp dir (path printed).
"""
import base64
import json
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
ws_sync = pytest.importorskip("websockets.sync.client")

from conftest import require_system, serve_in_thread  # noqa: E402
from smile2pay import Smile2Pay  # noqa: E402
from smile2pay_tools.bench import clips  # noqa: E402
from smile2pay.server.app import Limits, create_app  # noqa: E402

KEY = "stream-key-0123456789abcdef"
H = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def people(data_dir):
    return clips.smiling_people(data_dir, 2)


@pytest.fixture(scope="module")
def server(tmp_path_factory, models_dir, people):
    from smile2pay.config import Settings
    from smile2pay.pipeline import FacePipeline

    pipe = FacePipeline(Settings.from_env(models=str(models_dir)))
    s2p = Smile2Pay(tmp_path_factory.mktemp("srv") / "g", pipeline=pipe)
    app = create_app(s2p, KEY, Limits(max_body_bytes=4_000_000, max_frames=8, max_frame_bytes=1_000_000))
    with serve_in_thread(app) as (base, port):
        # enrol person A through the API (the upscaled neutral still, as a till's enrolment photo)
        subj, neutral, _ = people[0]
        ok, buf = cv2.imencode(".jpg", clips.compose(neutral), [cv2.IMWRITE_JPEG_QUALITY, 92])
        r = httpx.post(base + "/v1/enroll", headers=H, timeout=60,
                       json={"user_id": subj, "images": [base64.b64encode(buf.tobytes()).decode()],
                             "kind": "neutral"})
        assert r.status_code == 200, r.text
        yield base, port, s2p
    s2p.close()


def jpeg(frame) -> bytes:
    return cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def stream(port, start: dict, frames, url_suffix="", max_s=60.0):
    """Send frames (cycling the last one) every ~33 ms, collect messages until the final one."""
    msgs = []
    with ws_sync.connect(f"ws://127.0.0.1:{port}/v1/stream{url_suffix}", open_timeout=10) as ws:
        ws.send(json.dumps(start))
        msgs.append(json.loads(ws.recv(timeout=30)))
        if msgs[0]["type"] != "started":
            return msgs
        data = [jpeg(f) for f in frames]
        i, t_end = 0, time.monotonic() + max_s
        while time.monotonic() < t_end:
            try:
                ws.send(data[min(i, len(data) - 1)])
            except Exception:       # the server closed (after its final message): read what is left
                try:
                    while True:
                        msgs.append(json.loads(ws.recv(timeout=5)))
                except Exception:
                    pass
                break
            i += 1
            try:
                while True:
                    m = json.loads(ws.recv(timeout=0.033))
                    msgs.append(m)
                    if m["type"] in ("final", "error"):
                        return msgs
            except TimeoutError:
                continue
            except Exception:
                break
    return msgs


def test_kiosk_files_are_public_and_api_is_not(server):
    base, _, _ = server
    r = httpx.get(base + "/kiosk")
    assert r.status_code == 200 and "kiosk.js" in r.text and "http" not in r.text.split("<body")[1].lower()
    assert httpx.get(base + "/kiosk/kiosk.js").status_code == 200
    assert httpx.get(base + "/kiosk/kiosk.css").status_code == 200
    assert httpx.get(base + "/kiosk/../v1/verify").status_code in (401, 404)
    assert httpx.get(base + "/kiosk/secret.txt").status_code == 404
    assert httpx.post(base + "/v1/verify", json={}).status_code == 401


def test_websocket_rejects_a_missing_or_wrong_key(server, people):
    _, port, _ = server
    subj = people[0][0]
    for start in ({"type": "start", "user_id": subj}, {"type": "start", "user_id": subj, "api_key": "wrong" * 5}):
        with ws_sync.connect(f"ws://127.0.0.1:{port}/v1/stream") as ws:
            ws.send(json.dumps(start))
            m = json.loads(ws.recv(timeout=10))
            assert m["type"] == "error" and m["error"]["code"] == "UNAUTHORIZED"
            with pytest.raises(Exception):
                ws.recv(timeout=10)
            assert ws.close_code == 4401


def test_websocket_bad_start_is_a_json_error(server, people):
    _, port, _ = server
    msgs = stream(port, {"type": "start", "api_key": KEY, "user_id": people[0][0], "require": "AU6+smile"}, [])
    assert msgs[0]["type"] == "error" and msgs[0]["error"]["code"] == "RULE_INVALID"
    msgs = stream(port, {"type": "start", "api_key": KEY, "user_id": people[0][0], "options": {"timeout_s": 1e6}}, [])
    assert msgs[0]["type"] == "error" and msgs[0]["error"]["code"] == "REQUEST_INVALID"


def test_websocket_odd_first_messages_are_json_errors(server, people):
    """A binary or hostilely nested first message is answered with a typed error and a close code (a binary
    one was dropped without an answer)."""
    _, port, _ = server
    for first, suffix, code, close in ((b"\x00\x01", "", "UNAUTHORIZED", 4401),
                                       (b"\xff\xd8\xff", f"?key={KEY}", "REQUEST_INVALID", 4400),
                                       ("[" * 100_000 + "]" * 100_000, f"?key={KEY}", "REQUEST_INVALID", 4400)):
        with ws_sync.connect(f"ws://127.0.0.1:{port}/v1/stream{suffix}", open_timeout=10) as ws:
            ws.send(first)
            m = json.loads(ws.recv(timeout=10))
            assert m["type"] == "error" and m["error"]["code"] == code, m
            with pytest.raises(Exception):
                ws.recv(timeout=10)
            assert ws.close_code == close


def test_websocket_genuine_approves_and_impostor_declines(server, people):
    _, port, s2p = server
    (a, na, pa), (_, nb, pb) = people
    msgs = stream(port, {"type": "start", "api_key": KEY, "user_id": a, "nonce": "ws-1"},
                  clips.clip_frames([(na, 20), (pa, 30)]))
    fin = msgs[-1]
    assert fin["type"] == "final", msgs[-3:]
    assert fin["state"] == "APPROVED" and fin["decision"]["approved"] is True
    states = [m["state"] for m in msgs if m["type"] == "update"]
    assert "SMILE_NOW" in states and all(m["box"] for m in msgs if m["type"] == "update" and m["state"] == "SMILE_NOW")
    # the key in the query string works too (non-browser clients); an impostor is declined
    msgs = stream(port, {"type": "start", "user_id": a, "options": {"mismatch_frames": 4}},
                  clips.clip_frames([(nb, 20), (pb, 30)]), url_suffix=f"?key={KEY}")
    assert msgs[-1]["type"] == "final" and msgs[-1]["decision"]["reasons"] == ["IDENTITY_MISMATCH"]
    # the nonce of the first session cannot be used again
    msgs = stream(port, {"type": "start", "api_key": KEY, "user_id": a, "nonce": "ws-1"}, [pa])
    assert msgs[-1]["type"] == "final" and msgs[-1]["decision"]["reasons"] == ["REPLAY"]


# ------------------------------------------------------------------------------ headless Chromium
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _driver(video_file, user_data):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", f"--user-data-dir={user_data}", "--window-size=800,1000",
              "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
              f"--use-file-for-fake-video-capture={video_file}"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _kiosk_run(base, user, video_file, tmp_path, name, timeout_s, screenshot_state=None):
    """Open /kiosk with a fake camera playing ``video_file``; return (final decision, history, shot)."""
    user_data = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    drv = _driver(video_file, user_data)
    shot = None
    try:
        drv.set_page_load_timeout(30)
        # the key is entered once on the device (kept in localStorage), never put in the URL
        drv.get(f"{base}/kiosk")
        drv.execute_script("localStorage.setItem('smile2pay.kiosk.credential', arguments[0])", KEY)
        drv.get(f"{base}/kiosk?run={name}#user={user}&timeout={timeout_s}&fps=12")
        assert KEY not in drv.current_url and KEY not in drv.page_source
        t_end = time.monotonic() + timeout_s + 40
        final = None
        while time.monotonic() < t_end:
            st = drv.execute_script("return document.body.dataset.state")
            if screenshot_state and shot is None and st == screenshot_state:
                shot = tmp_path / f"kiosk_{name}_{st.lower()}.png"
                drv.save_screenshot(str(shot))
            final = drv.execute_script("return window.smile2pay && window.smile2pay.final")
            if final:
                break
            time.sleep(0.05)
        hist = drv.execute_script("return window.smile2pay.history")
        result_text = drv.find_element("id", "result").text
        drv.save_screenshot(str(tmp_path / f"kiosk_{name}_final.png"))
        return final, hist, shot, result_text
    finally:
        drv.quit()
        shutil.rmtree(user_data, ignore_errors=True)


def test_kiosk_in_headless_chromium(server, people, tmp_path):
    require_system("chromium + chromedriver", bool(CHROMIUM and CHROMEDRIVER),
                   "apt-get install chromium chromium-driver")
    pytest.importorskip("selenium")
    base, _, _ = server
    (a, na, pa), (_, nb, pb) = people
    # Chromium's MJPEG fake camera runs at 30 fps and loops the file
    genuine = clips.write_mjpeg(clips.clip_frames([(na, 45), (pa, 90)], seed=1), tmp_path / "genuine.mjpeg")
    impostor = clips.write_mjpeg(clips.clip_frames([(nb, 45), (pb, 90)], seed=2), tmp_path / "impostor.mjpeg")
    nosmile = clips.write_mjpeg(clips.clip_frames([(na, 60)], seed=3), tmp_path / "nosmile.mjpeg")

    final, hist, shot, text = _kiosk_run(base, a, genuine, tmp_path, "genuine", 15, screenshot_state="SMILE_NOW")
    states = [h["state"] for h in hist]
    assert final and final["approved"] is True, (final, states[-5:])
    assert "SMILE_NOW" in states and "approved" in text.lower()
    assert shot is not None and shot.stat().st_size > 5000
    # keep a copy where pytest's tmp-dir rotation does not delete it (git-ignored: it shows a dataset face)
    keep = Path(__file__).resolve().parents[2] / "results" / "kiosk"
    keep.mkdir(parents=True, exist_ok=True)
    for f in tmp_path.glob("kiosk_*.png"):
        shutil.copy(f, keep / f.name)
    print(f"\nkiosk screenshot at the smile step: {shot} (copy: {keep / shot.name})")

    final, hist, _, text = _kiosk_run(base, a, impostor, tmp_path, "impostor", 15)
    assert final and final["approved"] is False and final["reasons"] == ["IDENTITY_MISMATCH"], final
    assert "not approved" in text.lower() and "confirm it's you" in text and "IDENTITY_MISMATCH" not in text

    final, hist, _, text = _kiosk_run(base, a, nosmile, tmp_path, "nosmile", 3)
    assert final and final["approved"] is False and final["reasons"][0] == "TIMEOUT", final
    assert "SMILE_NOW" in [h["state"] for h in hist]
    for f in tmp_path.glob("kiosk_*_final.png"):
        shutil.copy(f, keep / f.name)
