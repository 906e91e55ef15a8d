"""The first hour of a new user (issue "The first hour"): readable output, errors that say what to do,
compare two photos, identify a folder, list users over HTTP, /docs.

Real models, real images (samples/ of SMILE2PAY_DATA); the CLI runs as a user runs it (a subprocess).
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil

import pytest

from helpers import run


@pytest.fixture(scope="module")
def pairs(data_dir):
    """samples/deepface/pairs.csv: (path_a, path_b) of the same person and of different people."""
    rows = list(csv.DictReader(open(data_dir / "samples" / "deepface" / "pairs.csv")))
    same = [(str(data_dir / r["path_a"]), str(data_dir / r["path_b"])) for r in rows if r["same"] == "1"]
    diff = [(str(data_dir / r["path_a"]), str(data_dir / r["path_b"])) for r in rows if r["same"] == "0"]
    assert same and diff
    return same, diff


@pytest.fixture(scope="module")
def faceless(data_dir):
    """A sample without a face (samples/manifest.csv: a face-mask overlay texture, not a face photo)."""
    return str(data_dir / "samples" / "mask_black.jpg")


# ---------------------------------------------------------------------------------------- compare
def test_compare_same_person_exit_0_different_exit_1(pairs):
    from smile2pay.decision.policy import Policy

    same, diff = pairs
    shipped = Policy.from_calibration().identity_threshold
    for a, b in same[:2]:
        code, out, err = run("compare", a, b, "--json")
        d = json.loads(out)
        assert code == 0, (a, b, d, err)
        assert d["same"] is True and d["cosine"] >= d["threshold"] == pytest.approx(shipped)
        assert d["far"] == 1e-4 and "self-calibrates" in d["note"]
    for a, b in diff[:2]:
        code, out, _ = run("compare", a, b, "--json")
        d = json.loads(out)
        assert code == 1, (a, b, d)
        assert d["same"] is False and d["cosine"] < d["threshold"]


def test_compare_human_output_and_errors(pairs, faceless):
    (a, b), (c, e) = pairs[0][0], pairs[1][0]
    code, out, _ = run("compare", a, b)
    assert code == 0 and out.startswith("SAME PERSON: cosine ") and "threshold" in out
    assert "{" not in out                                     # readable lines, not JSON
    assert "self-calibrates" in " ".join(out.split())
    code, out, _ = run("compare", c, e)
    assert code == 1 and out.startswith("DIFFERENT PEOPLE: cosine ")
    code, out, err = run("compare", a, faceless, "--json")
    err_obj = json.loads(out)["error"]
    assert code == 2 and err_obj["code"] == "NO_FACE" and faceless in err_obj["message"]
    assert "smile2pay analyze" in err_obj["hint"]


# ---------------------------------------------------------------------------------------- analyze
def test_analyze_without_a_face_exits_1(faceless, t1_path):
    code, out, _ = run("analyze", faceless, "--json")
    d = json.loads(out)
    assert code == 1 and d["images"][0]["count"] == 0
    code, out, _ = run("analyze", faceless)
    assert code == 1 and "NO FACE" in out and "{" not in out
    code, out, _ = run("analyze", str(t1_path))
    assert code == 0 and "6 faces" in out


# ---------------------------------------------------------------------------------------- gallery CLI
@pytest.fixture(scope="module")
def gallery(tmp_path_factory, data_dir):
    """A gallery with id03 (neutral photo img13) and id05 (smiling photo img18, kind smile)."""
    g = str(tmp_path_factory.mktemp("fh") / "shop")
    d = data_dir / "samples" / "deepface"
    code, out, err = run("enroll", "--gallery", g, "--create", "id03", str(d / "img13.jpg"), "--json")
    assert code == 0, out + err
    code, out, err = run("enroll", "--gallery", g, "id05", str(d / "img18.jpg"), "--kind", "smile", "--json")
    assert code == 0, out + err
    return g


def test_missing_gallery_error_says_what_to_do(tmp_path, data_dir):
    img = str(data_dir / "samples" / "deepface" / "img13.jpg")
    g = str(tmp_path / "typo")
    code, out, _ = run("identify", "--gallery", g, img, "--json")
    e = json.loads(out)["error"]
    assert code == 2 and e["code"] == "GALLERY_NOT_FOUND"
    assert f"smile2pay enroll --gallery {g} --create" in e["hint"]
    code, out, err = run("identify", "--gallery", g, img)
    assert code == 2 and out == "" and "GALLERY_NOT_FOUND" in err and "next: create it with" in err


def test_identify_folder_writes_one_row_per_image(tmp_path, gallery, data_dir, faceless):
    d = data_dir / "samples" / "deepface"
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("img14.jpg", "img19.jpg", "img3.jpg"):      # id03, id05, id01 (not enrolled)
        shutil.copy(d / name, folder / name)
    shutil.copy(faceless, folder / "mask.jpg")              # no face: a row with its error
    (folder / "notes.txt").write_text("not an image")
    report = tmp_path / "who.csv"
    code, out, err = run("identify", "--gallery", gallery, "--folder", str(folder), "--report", str(report),
                         "--json")
    assert code == 1, err                                   # one image had no face
    assert "identify" in err                                # the progress bar (stderr)
    rows = {os.path.basename(r["image"]): r for r in csv.DictReader(open(report))}
    assert set(rows) == {"img14.jpg", "img19.jpg", "img3.jpg", "mask.jpg"}
    assert rows["img14.jpg"]["identified"] == "id03" and rows["img19.jpg"]["identified"] == "id05"
    assert rows["img3.jpg"]["identified"] == "" and rows["img3.jpg"]["error_code"] == ""
    assert rows["mask.jpg"]["error_code"] == "NO_FACE"
    d_json = json.loads(out)
    assert (d_json["images"], d_json["identified"], d_json["unknown"], d_json["errors"]) == (4, 2, 1, 1)
    # JSON report; without the face-less image every image is answered: exit 0
    (folder / "mask.jpg").unlink()
    code, out, err = run("identify", "--gallery", gallery, "--folder", str(folder), "--report",
                         str(tmp_path / "who.json"), "--no-progress")
    assert code == 0, err
    rep = json.loads((tmp_path / "who.json").read_text())
    assert len(rep["results"]) == 3 and rep["identified"] == 2
    assert "img14.jpg: id03 (cosine" in out and "3 images: 2 identified, 1 unknown" in out
    # single-image identify still works
    code, out, _ = run("identify", "--gallery", gallery, str(d / "img15.jpg"), "--json")
    assert code == 0 and json.loads(out)["identified"] == "id03"


def test_human_output_is_readable_lines(gallery, data_dir):
    d = data_dir / "samples" / "deepface"
    code, out, _ = run("verify-identity", "--gallery", gallery, "id03", str(d / "img14.jpg"))
    assert code == 0 and out.startswith("MATCH: id03, cosine ") and "{" not in out
    code, out, _ = run("verify", "--gallery", gallery, "id03", str(d / "img3.jpg"), str(d / "img12.jpg"))
    assert code == 1
    first = out.splitlines()[0]
    assert first.startswith("DECLINED: ") and "IDENTITY_MISMATCH" in first
    assert "identity  score" in out and "< threshold" in out and "{" not in out
    code, out, _ = run("gallery", "--gallery", gallery, "list")
    assert code == 0 and "id03" in out and "{" not in out


# ---------------------------------------------------------------------------------------- demo
def test_demo_tells_its_story(data_dir):
    code, out, err = run("demo", "--data", str(data_dir))
    assert code == 0, err
    assert "{" not in out
    for uid in ("id00", "id03", "id08", "S010"):
        assert uid in out
    flat = " ".join(out.split())
    assert "threshold: cosine >=" in flat and "FAR 1e-4" in flat
    assert flat.count("proves:") >= 2 and "a still photo of the right person does not pay" in flat
    assert "Next" in out and "smile2pay compare" in out
    cases = [ln for ln in out.splitlines() if re.match(r"\s+S\d{3}\s+(own|another) ", ln)]
    assert len(cases) == 9 and sum("APPROVED" in ln for ln in cases) == 3
    assert all("APPROVED" in ln for ln in cases if "own neutral -> smile burst" in ln)


# ---------------------------------------------------------------------------------------- HTTP
ADMIN = "admin-key-0123456789abcdef"
KIOSK = "kiosk-key-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline, data_dir):
    pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from conftest import serve_in_thread
    from smile2pay import Smile2Pay
    from smile2pay.server.app import Limits, create_app

    d = data_dir / "samples" / "deepface"
    s2p = Smile2Pay(tmp_path_factory.mktemp("srv") / "g", pipeline=pipeline)
    s2p.enroll("id03", [str(d / "img13.jpg")])
    s2p.enroll("id05", [str(d / "img18.jpg"), str(d / "img19.jpg")], kind="smile")
    app = create_app(s2p, ADMIN, Limits(verify_per_minute=10_000), kiosk_api_key=KIOSK)
    with serve_in_thread(app) as (base, _):
        yield base
    s2p.close()


def test_users_over_http_admin_only(server):
    import httpx

    A, K = {"X-API-Key": ADMIN}, {"X-API-Key": KIOSK}
    r = httpx.get(server + "/v1/users", headers=A, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"users": ["id03", "id05"], "count": 2, "offset": 0, "limit": 100, "next_offset": None}
    page = httpx.get(server + "/v1/users", params={"offset": 0, "limit": 1}, headers=A, timeout=30).json()
    assert page["users"] == ["id03"] and page["next_offset"] == 1
    page = httpx.get(server + "/v1/users", params={"offset": 1, "limit": 1}, headers=A, timeout=30).json()
    assert page["users"] == ["id05"] and page["next_offset"] is None
    r = httpx.get(server + "/v1/users", params={"limit": 0}, headers=A, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "REQUEST_INVALID"
    rec = httpx.get(server + "/v1/users/id05", headers=A, timeout=30).json()
    assert rec["user_id"] == "id05" and rec["templates"] == 2 and rec["kinds"] == {"smile": 2}
    assert rec["created"].startswith("20") and rec["updated"]
    assert "embedding" not in json.dumps(rec) and "template_ids" not in rec
    r = httpx.get(server + "/v1/users/nobody", headers=A, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "GALLERY_USER_NOT_FOUND"
    for path in ("/v1/users", "/v1/users/id03"):
        r = httpx.get(server + path, headers=K, timeout=30)          # the kiosk key may only verify
        assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
        r = httpx.get(server + path, timeout=30)
        assert r.status_code == 401


def test_openapi_documents_request_bodies(server):
    import httpx

    r = httpx.get(server + "/docs", timeout=30)                     # no key needed
    assert r.status_code == 200 and "swagger" in r.text.lower()
    spec = httpx.get(server + "/openapi.json", timeout=30).json()
    schemas = spec["components"]["schemas"]

    def resolve(s):
        return schemas[s["$ref"].rsplit("/", 1)[1]] if "$ref" in s else s

    for path, field in (("/v1/verify", "frames"), ("/v1/enroll", "images"), ("/v1/identify", "images")):
        body = spec["paths"][path]["post"]["requestBody"]["content"]
        js = resolve(body["application/json"]["schema"])
        assert field in js["properties"] and field in js["required"], (path, js)
        assert js["properties"][field]["type"] == "array"
        form = resolve(body["multipart/form-data"]["schema"])
        assert form["properties"][field]["items"]["format"] == "binary"
    assert "user_id" in resolve(spec["paths"]["/v1/verify"]["post"]["requestBody"]["content"]["application/json"]
                                ["schema"])["required"]
    assert {"/v1/users", "/v1/users/{user_id}"} <= set(spec["paths"])
    assert "ApiKey" in spec["components"]["securitySchemes"]


def test_docs_can_be_turned_off(pipeline, tmp_path):
    import httpx

    from conftest import serve_in_thread
    from smile2pay import Smile2Pay
    from smile2pay.server.app import create_app

    with Smile2Pay(tmp_path / "g", pipeline=pipeline) as s2p:
        with serve_in_thread(create_app(s2p, ADMIN, docs=False)) as (base, _):
            assert httpx.get(base + "/openapi.json", timeout=30).status_code == 401      # no longer public
            A = {"X-API-Key": ADMIN}
            assert httpx.get(base + "/openapi.json", headers=A, timeout=30).status_code == 404
            assert httpx.get(base + "/docs", headers=A, timeout=30).status_code == 404
