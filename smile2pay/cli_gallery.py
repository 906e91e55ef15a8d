"""Gallery commands: enroll, enroll-batch, identify, verify-identity, remove, gallery, gallery-rotate-key.

Keys come from SMILE2PAY_GALLERY_KEY / SMILE2PAY_GALLERY_KEY_FILE or ``--key-file``.
Exit codes: 0 success, 1 negative result (no match, duplicate, no usable face), 2 bad input/setup.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .cli import command, settings_from
from .errors import RequestError


def _gallery_args(p, threshold: bool = False, create: bool = False):
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
    from .config import GallerySettings

    return GallerySettings.from_env(key_file=getattr(args, "key_file", None),
                                    identity_threshold=getattr(args, "threshold", None),
                                    plaintext=getattr(args, "plaintext", None), **kw)


_gsettings = gallery_settings_from


def _s2p(args, **kw):
    from .api import Smile2Pay

    return Smile2Pay(args.gallery, settings=settings_from(args), gallery_settings=_gsettings(args, **kw),
                     create=bool(getattr(args, "create", False)))


def _open_gallery(args, create: bool = False):
    from .gallery import open_gallery

    gs = _gsettings(args)
    kw = {"follow": False} if str(args.gallery).startswith(("postgresql://", "postgres://")) else {}
    return open_gallery(args.gallery, key=gs.key, identity_threshold=gs.identity_threshold, create=create,
                        plaintext=gs.plaintext, **kw)


# ------------------------------------------------------------------------------------ enroll
def _cfg_enroll(p):
    _gallery_args(p, threshold=True, create=True)
    p.add_argument("user_id")
    p.add_argument("images", nargs="+")
    p.add_argument("--kind", action="append", help="template kind (neutral, smile, ...): once, or once per image")
    p.add_argument("--mode", choices=["new", "append", "replace"], default="new")
    p.add_argument("--pick", choices=["error", "largest", "center", "best"], default="error",
                   help="which face when an image holds several (default: error)")
    p.add_argument("--allow-duplicate", action="store_true", help="skip the duplicate-identity check")
    p.add_argument("--detector", choices=["scrfd", "yunet"])
    p.add_argument("--threads", type=int)


@command("enroll", _cfg_enroll)
def cmd_enroll(args) -> tuple[Any, int]:
    kinds = args.kind or ["neutral"]
    if len(kinds) not in (1, len(args.images)):
        raise RequestError("--kind must be given once or once per image", code="REQUEST_INVALID")
    with _s2p(args) as s2p:
        res = s2p.enroll(args.user_id, args.images, kinds[0] if len(kinds) == 1 else kinds, mode=args.mode,
                         pick=args.pick, check_duplicates=not args.allow_duplicate)
        return {"enrolled": res.to_dict(), "gallery_users": s2p.count()}, 0


# ------------------------------------------------------------------------------------ enroll-batch
def _cfg_enroll_batch(p):
    _gallery_args(p, threshold=True, create=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--folder", help="one sub-folder per user")
    src.add_argument("--manifest", help="CSV: user_id,image_path[,kind]")
    p.add_argument("--kind", default="neutral", help="kind when the manifest/folder does not say")
    p.add_argument("--mode", choices=["new", "append", "replace"], default="new",
                   help="new: skip users already enrolled (resumable)")
    p.add_argument("--workers", type=int, default=2, help="embedding processes (1 ORT thread each)")
    p.add_argument("--pick", choices=["error", "largest", "center", "best"], default="error")
    p.add_argument("--no-quality-gate", action="store_true", help="enrol images that fail the quality gates")
    p.add_argument("--allow-duplicate", action="store_true")
    p.add_argument("--limit", type=int, help="enrol at most this many users this run")
    p.add_argument("--report", help="also write the JSON summary to this file")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--detector", choices=["scrfd", "yunet"])


@command("enroll-batch", _cfg_enroll_batch)
def cmd_enroll_batch(args) -> tuple[Any, int]:
    from .gallery.batch import plan_folder, plan_manifest, run_batch

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
def _cfg_identify(p):
    _gallery_args(p, threshold=True)
    p.add_argument("image")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--pick", choices=["error", "largest", "center", "best"], default="error")


@command("identify", _cfg_identify)
def cmd_identify(args) -> tuple[Any, int]:
    with _s2p(args) as s2p:
        matches = s2p.identify(args.image, k=args.k, pick=args.pick)
        identified = matches[0].user_id if matches and matches[0].match else None
        return {"image": args.image, "identified": identified, "threshold": s2p.identity_threshold,
                "candidates": [m.to_dict() for m in matches]}, 0 if identified else 1


def _cfg_verify_identity(p):
    _gallery_args(p, threshold=True)
    p.add_argument("user_id")
    p.add_argument("image")
    p.add_argument("--pick", choices=["error", "largest", "center", "best"], default="error")


@command("verify-identity", _cfg_verify_identity)
def cmd_verify_identity(args) -> tuple[Any, int]:
    with _s2p(args) as s2p:
        r = s2p.verify_identity(args.user_id, args.image, pick=args.pick)
        return r.to_dict(), 0 if r.match else 1


# ------------------------------------------------------------------------------------ remove / admin
def _cfg_remove(p):
    _gallery_args(p)
    p.add_argument("user_id")
    p.add_argument("--no-compact", action="store_true",
                   help="skip compaction (the erased bytes may stay in free pages until the next compact)")


@command("remove", _cfg_remove)
def cmd_remove(args) -> tuple[Any, int]:
    from .gallery import open_guard

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
    _gallery_args(p)
    p.add_argument("action", choices=["info", "list", "check", "compact"])
    p.add_argument("--user", help="info: one user's record")


@command("gallery", _cfg_gallery)
def cmd_gallery(args) -> tuple[Any, int]:
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
    from .decision import population
    from .decision.policy import DEFAULT_FAR, Policy
    from .errors import ConfigError

    pinned = _gsettings(args).identity_threshold
    if pinned is not None:
        return {"threshold": pinned, "source": "configured"}
    try:
        policy = Policy.from_calibration(getattr(args, "policy", None), far=getattr(args, "far", None) or DEFAULT_FAR,
                                         model_fingerprint=g.fingerprint)
    except ConfigError as e:
        return {"error": {"code": e.code, "message": str(e)}}
    return population.summary(population.for_gallery(g, policy))


def _cfg_rotate(p):
    _gallery_args(p)
    grp = p.add_mutually_exclusive_group(required=True)
    grp.add_argument("--new-key-file", help="file with the new key (32 raw bytes, hex or base64)")
    grp.add_argument("--generate-new-key", metavar="FILE", help="generate a new key into FILE (mode 0600)")
    grp.add_argument("--decrypt", action="store_true", help="remove encryption (store templates in plaintext)")


@command("gallery-rotate-key", _cfg_rotate)
def cmd_rotate(args) -> tuple[Any, int]:
    from .config import parse_gallery_key
    from .gallery import generate_key

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
