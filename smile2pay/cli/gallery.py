"""Gallery commands: enroll, enroll-batch, identify, verify-identity, remove, gallery, gallery-rotate-key.

Keys come from SMILE2PAY_GALLERY_KEY / SMILE2PAY_GALLERY_KEY_FILE or ``--key-file``.
Exit codes: 0 success, 1 negative result (no match, duplicate, no usable face), 2 bad input/setup.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .main import PICK_HELP, add_runtime_args, command, fmt_score, settings_from
from ..errors import FaceError, ImageError, RequestError

PICKS = ["error", "largest", "center", "best"]


def gallery_args(p, threshold: bool = False, create: bool = False):
    """The gallery options every command that opens a gallery shares (--gallery, --key-file, --plaintext;
    ``create``: --create; ``threshold``: --threshold); read them back with :func:`gallery_settings_from`."""
    p.add_argument("--gallery", required=True,
                   help="gallery folder, sqlite:///path, or postgresql://user@host:port/db[?schema=name] (fleet)")
    p.add_argument("--key-file", help="gallery key file (default: SMILE2PAY_GALLERY_KEY[_FILE]; else the "
                                      "gallery.key beside a folder gallery)")
    p.add_argument("--plaintext", action="store_true", default=None,
                   help="store / read templates unencrypted (default: encrypted; SMILE2PAY_GALLERY_PLAINTEXT=1)")
    if create:
        p.add_argument("--create", action="store_true",
                       help="create the gallery if it does not exist (default: a missing gallery is an error)")
    if threshold:
        p.add_argument("--threshold", type=float, help="pin the identity cosine threshold (default: the calibrated threshold "
                       "adjusted to this gallery's population)")


def gallery_settings_from(args, **kw):
    """GallerySettings from the common gallery options (--key-file, --threshold, --plaintext) and the environment."""
    from ..config import GallerySettings

    return GallerySettings.from_env(key_file=getattr(args, "key_file", None),
                                    identity_threshold=getattr(args, "threshold", None),
                                    plaintext=getattr(args, "plaintext", None), **kw)


def _s2p(args, **kw):
    from ..api import Smile2Pay

    return Smile2Pay(args.gallery, settings=settings_from(args), gallery_settings=gallery_settings_from(args, **kw),
                     create=bool(getattr(args, "create", False)))


def _open_gallery(args, create: bool = False):
    from ..gallery import open_gallery

    gs = gallery_settings_from(args)
    kw = {"follow": False} if str(args.gallery).startswith(("postgresql://", "postgres://")) else {}
    return open_gallery(args.gallery, key=gs.key, identity_threshold=gs.identity_threshold, create=create,
                        plaintext=gs.plaintext, **kw)


# ------------------------------------------------------------------------------------ enroll
def _cfg_enroll(p):
    gallery_args(p, threshold=True, create=True)
    p.add_argument("user_id", help="the id to enrol the photos under (your customer id)")
    p.add_argument("images", nargs="+", help="one or more photos of that person, one face each")
    p.add_argument("--kind", action="append", help="template kind (neutral, smile, ...): once, or once per image "
                                                   "(default: neutral; a neutral photo is also the user's AU baseline)")
    p.add_argument("--mode", choices=["new", "append", "replace"], default="new",
                   help="new: refuse a user id that exists; append: add these photos to the user; "
                        "replace: drop the user's old templates first")
    p.add_argument("--pick", choices=PICKS, default="error", help=PICK_HELP)
    p.add_argument("--allow-duplicate", action="store_true",
                   help="skip the duplicate-identity check (by default a face already enrolled under another "
                        "id is refused)")
    add_runtime_args(p)


def _human_enroll(d: dict, code: int) -> str:
    e = d["enrolled"]
    verb = "enrolled" if e.get("created") else "updated"
    lines = [f"{verb} {e['user_id']}: {len(e['template_ids'])} template(s) ({', '.join(e['kinds'])}), mode {e['mode']}"
             + (f", {e['replaced']} old template(s) replaced" if e.get("replaced") else "")
             + f"; the gallery holds {d['gallery_users']} user(s)"]
    for r in e.get("rejected") or []:
        lines.append(f"  rejected {r.get('image', r.get('index', '?'))}: {r.get('code')} {r.get('message', '')}")
    lines.append(f"next: smile2pay verify --gallery GALLERY {e['user_id']} NEUTRAL.jpg SMILE.jpg")
    return "\n".join(lines)


@command("enroll", _cfg_enroll, human=_human_enroll, examples="""\
examples:
  smile2pay enroll --gallery shop --create alice alice.jpg         # a new gallery (encrypted; key beside it)
  smile2pay enroll --gallery shop bob bob_neutral.jpg bob_smile.jpg --kind neutral --kind smile
  smile2pay enroll --gallery shop --mode append alice alice_2.jpg
exit: 0 enrolled, 1 no usable face / duplicate identity, 2 bad input or setup""")
def cmd_enroll(args) -> tuple[Any, int]:
    """Enrol a user's photos into a gallery (--create: new).

    Enrol a user from one or more photos; a neutral photo also becomes the user's AU baseline.
    A gallery is created only with --create (templates AES-256-GCM encrypted, key beside it)."""
    kinds = args.kind or ["neutral"]
    if len(kinds) not in (1, len(args.images)):
        raise RequestError("--kind must be given once or once per image", code="REQUEST_INVALID")
    with _s2p(args) as s2p:
        res = s2p.enroll(args.user_id, args.images, kinds[0] if len(kinds) == 1 else kinds, mode=args.mode,
                         pick=args.pick, check_duplicates=not args.allow_duplicate)
        return {"enrolled": res.to_dict(), "gallery_users": s2p.count()}, 0


# ------------------------------------------------------------------------------------ enroll-batch
def _cfg_enroll_batch(p):
    gallery_args(p, threshold=True, create=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--folder", help="one sub-folder per user (the sub-folder's name is the user id)")
    src.add_argument("--manifest", help="CSV: user_id,image_path[,kind]")
    p.add_argument("--kind", default="neutral", help="kind when the manifest/folder does not say")
    p.add_argument("--mode", choices=["new", "append", "replace"], default="new",
                   help="new: skip users already enrolled (resumable); append: add the photos to existing "
                        "users; replace: drop their old templates first")
    p.add_argument("--workers", type=int, default=2, help="embedding processes (1 ORT thread each)")
    p.add_argument("--pick", choices=PICKS, default="error", help=PICK_HELP)
    p.add_argument("--no-quality-gate", action="store_true", help="enrol images that fail the quality gates")
    p.add_argument("--allow-duplicate", action="store_true", help="skip the duplicate-identity check")
    p.add_argument("--limit", type=int, help="enrol at most this many users this run (default: all)")
    p.add_argument("--report", help="also write the JSON summary to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_runtime_args(p, threads=False)


def _human_enroll_batch(d: dict, code: int) -> str:
    c = d.get("counts", {})
    lines = [f"{d.get('source')}: {c.get('enrolled', 0)} enrolled, {c.get('rejected', 0)} with rejected photos, "
             f"{c.get('duplicates', 0)} duplicates, {c.get('errors', 0)} errors, "
             f"{c.get('skipped_already_enrolled', 0)} already enrolled (skipped)"]
    for r in d.get("duplicates", [])[:20]:
        lines.append(f"  duplicate {r['user_id']}: same face as {r.get('duplicate_of')}")
    for r in d.get("errors", [])[:20]:
        lines.append(f"  error {r['user_id']}: {r.get('code')} {r.get('message', '')}")
    if d.get("images_per_s"):
        lines.append(f"{d['images_per_s']} images/s over {d.get('wall_s')} s")
    return "\n".join(lines)


@command("enroll-batch", _cfg_enroll_batch, human=_human_enroll_batch, examples="""\
examples:
  smile2pay enroll-batch --gallery shop --create --folder people/ --report enrol.json
  smile2pay enroll-batch --gallery shop --manifest users.csv --workers 2""")
def cmd_enroll_batch(args) -> tuple[Any, int]:
    """Enrol many users from a folder or a CSV manifest.

    One sub-folder per user, or a CSV user_id,image_path[,kind]; re-running skips users already
    enrolled (resumable)."""
    from ..gallery.batch import plan_folder, plan_manifest, run_batch

    if args.workers < 1:
        raise RequestError("--workers must be >= 1", code="REQUEST_INVALID")
    tasks = plan_folder(args.folder, args.kind) if args.folder else plan_manifest(args.manifest, args.kind)
    with _s2p(args) as s2p:
        report = run_batch(s2p.gallery, tasks, s2p.settings, workers=args.workers, pick=args.pick, mode=args.mode,
                           require_quality=not args.no_quality_gate, check_duplicates=not args.allow_duplicate,
                           progress=not args.no_progress, limit=args.limit, threshold=s2p.identity_threshold,
                           shows_smile=s2p.shows_smile)
    report["source"] = args.folder or args.manifest
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))
    return report, 0 if not report["errors"] else 1


# ------------------------------------------------------------------------------------ identify / verify
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: the columns of ``identify --folder --report out.csv`` (one row per image)
REPORT_COLUMNS = ("image", "identified", "score", "threshold", "best_candidate", "best_score", "candidates",
                  "error_code", "error_message")


def _cfg_identify(p):
    gallery_args(p, threshold=True)
    p.add_argument("image", nargs="?", help="the photo to identify (or --folder)")
    p.add_argument("--folder", help="identify every image in this folder instead (jpg, jpeg, png, bmp, webp, tif)")
    p.add_argument("--recursive", action="store_true", help="--folder: include sub-folders")
    p.add_argument("--report", metavar="FILE",
                   help="--folder: write one row per image to FILE, CSV (.csv) or JSON (.json)")
    p.add_argument("--no-progress", action="store_true", help="--folder: no progress bar on stderr")
    p.add_argument("-k", type=int, default=5, help="how many candidates (best first) to return per image")
    p.add_argument("--pick", choices=PICKS, default="error", help=PICK_HELP)
    add_runtime_args(p)


def _folder_images(folder: str, recursive: bool) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise RequestError(f"not a folder: {folder}", code="REQUEST_INVALID", path=folder)
    files = root.rglob("*") if recursive else root.iterdir()
    images = sorted(p for p in files if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise RequestError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}"
                           + ("" if recursive else " (add --recursive for sub-folders)"),
                           code="REQUEST_INVALID", path=folder)
    return images


def _write_report(path: str, rows: list[dict], summary: dict) -> None:
    import csv

    out = Path(path)
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps({**summary, "results": rows}, indent=2, default=str))
        return
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=REPORT_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "candidates": ";".join(f"{c['user_id']}:{c['score']}" for c in r.get("candidates", []))})


def _identify_folder(args) -> tuple[Any, int]:
    from tqdm import tqdm

    if args.report and Path(args.report).suffix.lower() not in (".csv", ".json"):
        raise RequestError("--report must end in .csv or .json", code="REQUEST_INVALID")
    images = _folder_images(args.folder, args.recursive)
    rows: list[dict] = []
    with _s2p(args) as s2p:
        threshold = s2p.identity_threshold
        bar = tqdm(images, desc="identify", unit="img", disable=args.no_progress, file=__import__("sys").stderr)
        for path in bar:
            row: dict[str, Any] = {"image": str(path), "identified": None, "score": None, "threshold": threshold,
                                   "best_candidate": None, "best_score": None, "candidates": [],
                                   "error_code": None, "error_message": None}
            try:
                matches = s2p.identify(str(path), k=args.k, pick=args.pick)
            except (ImageError, FaceError) as e:   # no face, unreadable image...: this image's row says why
                row.update(error_code=e.code, error_message=e.message)
            else:
                if matches:
                    best = matches[0]
                    row.update(best_candidate=best.user_id, best_score=round(float(best.score), 5),
                               identified=best.user_id if best.match else None,
                               score=round(float(best.score), 5) if best.match else None)
                row["candidates"] = [m.to_dict() for m in matches]
            rows.append(row)
            bar.set_postfix(identified=sum(r["identified"] is not None for r in rows), refresh=False)
    summary = {"folder": args.folder, "images": len(rows), "threshold": threshold,
               "identified": sum(r["identified"] is not None for r in rows),
               "unknown": sum(r["identified"] is None and r["error_code"] is None for r in rows),
               "errors": sum(r["error_code"] is not None for r in rows)}
    if args.report:
        _write_report(args.report, rows, summary)
        summary["report"] = args.report
    return {**summary, "results": rows}, 1 if summary["errors"] else 0


def _human_identify(d: dict, code: int) -> str:
    if "results" in d:     # --folder
        lines = []
        for r in d["results"]:
            if r["error_code"]:
                what = f"error [{r['error_code']}] {r['error_message']}"
            elif r["identified"]:
                what = f"{r['identified']} (cosine {fmt_score(r['score'])})"
            else:
                what = "unknown" + (f" (best {r['best_candidate']} {fmt_score(r['best_score'])})"
                                    if r["best_candidate"] else "")
            lines.append(f"{r['image']}: {what}")
        lines.append(f"{d['images']} images: {d['identified']} identified, {d['unknown']} unknown, {d['errors']} "
                     f"errors (threshold cosine >= {fmt_score(d['threshold'])})"
                     + (f"; report: {d['report']}" if d.get("report") else ""))
        return "\n".join(lines)
    cands = d.get("candidates") or []
    head = (f"{d['image']}: {d['identified']} (cosine {fmt_score(cands[0]['score'])} >= threshold "
            f"{fmt_score(d['threshold'])})" if d["identified"] else
            f"{d['image']}: unknown: nobody in the gallery reaches threshold {fmt_score(d['threshold'])}")
    lines = [head]
    for c in cands:
        lines.append(f"  {c['user_id']:24s} {fmt_score(c['score']):>8s}  {'match' if c['match'] else ''}")
    return "\n".join(lines)


@command("identify", _cfg_identify, human=_human_identify, examples="""\
examples:
  smile2pay identify --gallery shop photo.jpg                       # who is this? (top -k candidates)
  smile2pay identify --gallery shop --folder photos/ --report who.csv   # every image, one row each
exit: one image: 0 identified, 1 nobody matches; --folder: 0 every image answered (identified or
unknown), 1 some images had no usable face or could not be read; 2 bad input or setup""")
def cmd_identify(args) -> tuple[Any, int]:
    """Who is this? Search a gallery (a photo or a --folder).

    1:N open-set identification of one photo, or of every image of a folder with a progress bar on
    stderr and a CSV/JSON report (--report)."""
    if args.folder and args.image:
        raise RequestError("give one image or --folder, not both", code="REQUEST_INVALID")
    if args.folder:
        return _identify_folder(args)
    if not args.image:
        raise RequestError("give an image to identify, or --folder DIR", code="REQUEST_INVALID")
    if args.report:
        raise RequestError("--report goes with --folder", code="REQUEST_INVALID")
    with _s2p(args) as s2p:
        matches = s2p.identify(args.image, k=args.k, pick=args.pick)
        identified = matches[0].user_id if matches and matches[0].match else None
        return {"image": args.image, "identified": identified, "threshold": s2p.identity_threshold,
                "candidates": [m.to_dict() for m in matches]}, 0 if identified else 1


def _cfg_verify_identity(p):
    gallery_args(p, threshold=True)
    p.add_argument("user_id", help="the claimed (enrolled) user id")
    p.add_argument("image", help="the photo to check")
    p.add_argument("--pick", choices=PICKS, default="error", help=PICK_HELP)
    add_runtime_args(p)


def _human_verify_identity(d: dict, code: int) -> str:
    op = ">=" if d["match"] else "<"
    return (f"{'MATCH' if d['match'] else 'NO MATCH'}: {d['user_id']}, cosine {fmt_score(d['score'])} {op} threshold "
            f"{fmt_score(d['threshold'])} (best template #{d['template_id']}, {d['kind']})")


@command("verify-identity", _cfg_verify_identity, human=_human_verify_identity, examples="""\
examples:
  smile2pay verify-identity --gallery shop alice photo.jpg
exit: 0 match, 1 no match, 2 bad input or setup""")
def cmd_verify_identity(args) -> tuple[Any, int]:
    """Is this photo the claimed user? (identity only)

    1:1 against the enrolled templates; no smile, no liveness (that is `verify`)."""
    with _s2p(args) as s2p:
        r = s2p.verify_identity(args.user_id, args.image, pick=args.pick)
        return r.to_dict(), 0 if r.match else 1


# ------------------------------------------------------------------------------------ remove / admin
def _cfg_remove(p):
    gallery_args(p)
    p.add_argument("user_id", help="the user to erase")
    p.add_argument("--no-compact", action="store_true",
                   help="skip compaction (the erased bytes may stay in free pages until the next compact)")


@command("remove", _cfg_remove, models=False, examples="""\
examples:
  smile2pay remove --gallery shop alice      # templates, AU baseline and lockout state; then compacted""")
def cmd_remove(args) -> tuple[Any, int]:
    """Erase a user from a gallery.

    Templates, AU baseline and lockout state; the gallery is then compacted so that no byte of
    them stays in free pages (the audit log keeps only ids and outcomes)."""
    from ..gallery import open_guard

    with _open_gallery(args) as g:
        n = g.remove(args.user_id)
        guard = open_guard(g)          # erasure covers the lockout state too, as Smile2Pay.remove does
        try:
            guard.forget_user(args.user_id)
        finally:
            guard.close()
        out: dict[str, Any] = {"removed": args.user_id, "templates": n, "gallery_users": g.count()}
        if not args.no_compact:
            out["compact"] = g.compact()
        return out, 0


def _cfg_gallery(p):
    gallery_args(p)
    p.add_argument("action", choices=["info", "list", "check", "compact"],
                   help="info: size, encryption, identity threshold; list: the user ids; check: integrity; "
                        "compact: reclaim the space of erased users")
    p.add_argument("--user", help="info: one user's record (template kinds and dates)")


@command("gallery", _cfg_gallery, models=False, examples="""\
examples:
  smile2pay gallery --gallery shop info              # users, encryption, the identity threshold and why
  smile2pay gallery --gallery shop list
  smile2pay gallery --gallery shop info --user alice""")
def cmd_gallery(args) -> tuple[Any, int]:
    """Look into a gallery: info, list, check, compact.

    info includes the identity threshold in use and why (shipped or self-calibrated)."""
    with _open_gallery(args) as g:
        if args.action == "list":
            return {"users": g.list(), "count": g.count()}, 0
        if args.action == "check":
            return g.check(), 0
        if args.action == "compact":
            return g.compact(), 0
        if args.user:
            return g.get(args.user).to_dict(), 0
        return {"path": str(g.path), "users": g.count(), "templates": g.template_count(), "encrypted": g.encrypted,
                "plaintext": not g.encrypted, "key_source": getattr(g, "key_source", None),
                "model": g.fingerprint, "index": g.index_kind, "identity": _identity_info(args, g)}, 0


def _identity_info(args, g) -> dict:
    """The identity threshold this gallery's population gets (what verify/identify use), as in /healthz."""
    from ..decision import population
    from ..decision.policy import DEFAULT_FAR, Policy
    from ..errors import ConfigError

    pinned = gallery_settings_from(args).identity_threshold
    if pinned is not None:
        return {"threshold": pinned, "source": "configured"}
    try:
        policy = Policy.from_calibration(getattr(args, "policy", None), far=getattr(args, "far", None) or DEFAULT_FAR,
                                         model_fingerprint=g.fingerprint)
    except ConfigError as e:
        return {"error": {"code": e.code, "message": str(e)}}
    return population.summary(population.for_gallery(g, policy))


def _cfg_rotate(p):
    gallery_args(p)
    grp = p.add_mutually_exclusive_group(required=True)
    grp.add_argument("--new-key-file", help="file with the new key (32 raw bytes, hex or base64)")
    grp.add_argument("--generate-new-key", metavar="FILE", help="generate a new key into FILE (mode 0600)")
    grp.add_argument("--decrypt", action="store_true", help="remove encryption (store templates in plaintext)")


@command("gallery-rotate-key", _cfg_rotate, models=False, examples="""\
examples:
  smile2pay gallery-rotate-key --gallery shop --generate-new-key new.key""")
def cmd_rotate(args) -> tuple[Any, int]:
    """Re-encrypt a gallery under a new key (or decrypt it)."""
    from ..config import parse_gallery_key
    from ..gallery import generate_key

    if args.generate_new_key:
        path = Path(args.generate_new_key)
        if path.exists():
            raise RequestError(f"{path} exists; refusing to overwrite a key file", code="REQUEST_INVALID")
        new = generate_key()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(new.hex() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    elif args.new_key_file:
        try:
            new = parse_gallery_key(Path(args.new_key_file).read_bytes())
        except OSError as e:
            raise RequestError(f"cannot read {args.new_key_file}: {e.strerror}", code="REQUEST_INVALID") from None
    else:
        new = None
    with _open_gallery(args) as g:
        n = g.rotate_key(new)
        return {"rotated": n, "encrypted": g.encrypted, "new_key_file": args.generate_new_key or args.new_key_file}, 0
