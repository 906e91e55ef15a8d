"""``smile2pay verify`` (the payment decision), ``smile2pay compare`` (two photos, no gallery) and
``smile2pay serve`` (the HTTP service).

verify exit codes: 0 approved, 1 declined, 2 bad input or setup. compare: 0 same person, 1 different
people, 2 bad input or setup.
"""
from __future__ import annotations

from typing import Any

from .main import FAR_HELP, PICK_HELP, POLICY_HELP, add_runtime_args, command, fmt_num, fmt_score, settings_from
from .gallery import PICKS, gallery_args, gallery_settings_from
from ..errors import Smile2PayError
from ..reasons import APPROVED


# ------------------------------------------------------------------------------------ verify
def _cfg_verify(p):
    gallery_args(p)
    p.add_argument("user_id", help="the claimed (enrolled) user id")
    p.add_argument("images", nargs="+", help="the burst of frames, in time order (a neutral face, then the smile)")
    p.add_argument("--require", default="AU6+AU12", help="AU rule, e.g. 'AU6+AU12' or 'AU6+AU12-AU4'")
    p.add_argument("--liveness", choices=["burst", "none"], default="burst",
                   help="burst: the smile must appear during the frames; 'none' (single frame, liveness NOT "
                        "checked) needs --allow-single-frame")
    p.add_argument("--allow-single-frame", action="store_true", help="permit --liveness none")
    p.add_argument("--pad", choices=["enforce", "report", "off"], help="passive presentation-attack detection: enforce (decline PRESENTATION_ATTACK), report (score only) or off; default: the calibration file's mode (report)")
    p.add_argument("--nonce", help="single-use request nonce (a replay is declined with REPLAY)")
    p.add_argument("--policy", help=POLICY_HELP)
    p.add_argument("--far", type=float, default=1e-4, help=FAR_HELP)
    add_runtime_args(p, detector=False)


def _human_verify(d: dict, code: int) -> str:
    ident, au, live = d.get("identity") or {}, d.get("au") or {}, d.get("liveness") or {}
    head = APPROVED if d["approved"] else f"DECLINED: {', '.join(d['reasons'])}"
    lines = [f"{head}  (user {d['user_id']}, rule {d.get('rule')})"]
    if ident.get("score") is not None:
        op = ">=" if ident.get("all_frames_match") else "<"
        pop = ident.get("population") or {}
        lines.append(f"  identity  score {fmt_score(ident['score'])} {op} threshold {fmt_score(ident.get('threshold'))} "
                     f"(lowest frame; FAR {fmt_num(ident.get('far'))}, {pop.get('source', 'calibration')} threshold)")
    thr = au.get("thresholds") or {}
    if thr:
        lines.append("  smile     needs " + ", ".join(f"{k} >= {fmt_num(v, 3)}" for k, v in thr.items())
                     + (f"; present in frame(s) {', '.join(map(str, au.get('present_frames') or []))}"
                        if au.get("present_frames") else "; present in no frame"))
    if live.get("checked"):
        lines.append(f"  liveness  {'passed' if live.get('passed') else 'failed'}"
                     + (f" (neutral frame {live.get('neutral_frame')} -> smile at frame {live.get('onset_frame')})"
                        if live.get("passed") else f": {', '.join(live.get('reasons') or [])}"))
    elif live:
        lines.append("  liveness  NOT checked (single frame)")
    for f in d.get("frames") or []:
        aus = " ".join(f"{k} {v:.2f}" for k, v in (f.get("au_probs") or {}).items())
        sc = "no face" if f.get("identity_score") is None else f"identity {fmt_score(f['identity_score'])}"
        extra = f" {','.join(f['reasons'])}" if f.get("reasons") else ""
        lines.append(f"  frame {f['index']}: {sc}, {aus or '-'}, smile {f.get('pattern', '-')}{extra}")
    return "\n".join(lines)


@command("verify", _cfg_verify, human=_human_verify, examples="""\
examples:
  smile2pay verify --gallery shop alice neutral.jpg smile.jpg            # APPROVED / DECLINED: reasons
  smile2pay verify --gallery shop alice f0.jpg f1.jpg f2.jpg --nonce order-8812 --json
exit: 0 approved, 1 declined, 2 bad input or setup""")
def cmd_verify(args) -> tuple[Any, int]:
    """Payment decision: the enrolled user, smiling, live?

    Approves only when every frame is the claimed user, the smile (--require) appears as a change from
    a neutral frame and from the user's own baseline, the frames are not one still photo, the user is
    not locked out and the nonce is fresh."""
    from ..api import Smile2Pay

    with Smile2Pay(args.gallery, settings=settings_from(args), gallery_settings=gallery_settings_from(args),
                   policy=args.policy, far=args.far, allow_single_frame=args.allow_single_frame,
                   create=False, pad=args.pad) as s2p:
        d = s2p.verify(args.user_id, args.images, require=args.require, liveness=args.liveness, nonce=args.nonce)
    return d.to_dict(), 0 if d.approved else 1


# ------------------------------------------------------------------------------------ compare
def _cfg_compare(p):
    p.add_argument("image_a", help="first photo")
    p.add_argument("image_b", help="second photo")
    p.add_argument("--threshold", type=float,
                   help="pin the cosine threshold (default: the calibration file's threshold at --far)")
    p.add_argument("--policy", help=POLICY_HELP)
    p.add_argument("--far", type=float, default=1e-4, help=FAR_HELP)
    p.add_argument("--pick", choices=PICKS, default="largest", help=PICK_HELP)
    add_runtime_args(p)


SELF_CALIBRATION_NOTE = ("the shipped calibration's threshold (the strictest population it was measured on); a "
                         "deployment's gallery self-calibrates its own from its enrolled users "
                         "(`smile2pay gallery --gallery G info`, docs/identity_far.md)")


def _human_compare(d: dict, code: int) -> str:
    op = ">=" if d["same"] else "<"
    lines = [f"{'SAME PERSON' if d['same'] else 'DIFFERENT PEOPLE'}: cosine {fmt_score(d['cosine'])} {op} threshold "
             f"{fmt_score(d['threshold'])}"]
    for img in d["images"]:
        lines.append(f"  {img['image']}: {img['faces']} face(s) found, compared the "
                     f"{'only one' if img['faces'] == 1 else img['picked'] + ' one'} (detection "
                     f"{img['det_score']:.2f}, quality {'ok' if img['quality_ok'] else 'low: ' + ', '.join(img['quality_reasons'])})")
    if d["threshold_source"] == "configured":
        lines.append("  threshold: pinned with --threshold")
    else:
        import textwrap

        lines += textwrap.wrap(f"threshold: the shipped calibration ({d['calibration'].split('@')[0]}) at FAR "
                               f"{fmt_num(d['far'])}, the strictest population it was measured on; a deployment's "
                               f"gallery self-calibrates its own from its enrolled users (smile2pay gallery "
                               f"--gallery G info)", 96, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(lines)


@command("compare", _cfg_compare, human=_human_compare, examples="""\
examples:
  smile2pay compare a.jpg b.jpg                  # SAME PERSON / DIFFERENT PEOPLE, cosine and threshold
  smile2pay compare a.jpg b.jpg --json
  smile2pay compare a.jpg b.jpg --far 1e-3       # a more lenient operating point
exit: 0 same person, 1 different people, 2 bad input (no face, unreadable image)""")
def cmd_compare(args) -> tuple[Any, int]:
    """Are two photos the same person? (no gallery needed)

    1:1 without a gallery, like deepface.verify. Each photo's face (the largest, unless --pick says otherwise) is embedded and the two embeddings'
    cosine is compared with the threshold of the shipped calibration at --far (FAR 1e-4: about one
    different-person pair in 10,000 passes). A deployment's gallery self-calibrates its own threshold
    from its enrolled users; see `smile2pay gallery --gallery G info`."""
    import numpy as np

    from ..decision.policy import Policy
    from ..pipeline import FacePipeline

    pipe = FacePipeline(settings_from(args))
    policy = Policy.from_calibration(args.policy, far=args.far, model_fingerprint=pipe.model_fingerprint)
    images, embs = [], []
    for path in (args.image_a, args.image_b):
        try:
            img = pipe.load(path)
            n = len(pipe.detect(img))
            face = pipe.single(img, pick=args.pick, au=False)
        except Smile2PayError as e:   # say which of the two photos; no usable face is an error here (exit 2)
            err = type(e)(f"{path}: {e.message}", code=e.code, **{"image": path, **e.details})
            err.exit_code = 2
            raise err from None
        embs.append(np.asarray(face.embedding, np.float64))
        q = face.quality.to_dict()
        images.append({"image": path, "faces": n, "picked": args.pick, "det_score": round(float(face.det_score), 4),
                       "bbox": [round(float(v), 1) for v in face.bbox], "quality_ok": bool(q.get("passed")),
                       "quality_reasons": q.get("reasons") or []})
    cos = float(np.dot(embs[0], embs[1]) / (np.linalg.norm(embs[0]) * np.linalg.norm(embs[1])))
    pinned = args.threshold is not None
    thr = float(args.threshold) if pinned else float(policy.identity_threshold)
    same = cos >= thr
    return {"same": same, "verdict": "same person" if same else "different people", "cosine": round(cos, 5),
            "threshold": thr, "threshold_source": "configured" if pinned else "shipped",
            "far": policy.identity_far, "calibration": policy.identity_source,
            "note": "pinned with --threshold" if pinned else SELF_CALIBRATION_NOTE,
            "images": images, "model_pack": pipe.pack.name}, 0 if same else 1


# ------------------------------------------------------------------------------------ serve
def _cfg_serve(p):
    gallery_args(p, create=True)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface; put TLS "
                                                       "in front)")
    p.add_argument("--port", type=int, default=8080, help="TCP port")
    p.add_argument("--api-key-file", help="file holding the admin API key (default: SMILE2PAY_API_KEY; the "
                                          "verify-only kiosk key: SMILE2PAY_KIOSK_API_KEY)")
    p.add_argument("--policy", help=POLICY_HELP)
    p.add_argument("--far", type=float, default=1e-4, help=FAR_HELP)
    add_runtime_args(p)


@command("serve", _cfg_serve, examples="""\
examples:
  export SMILE2PAY_API_KEY=$(python -c "import secrets; print(secrets.token_urlsafe(32))")
  smile2pay serve --gallery shop --create            # then open http://127.0.0.1:8080/docs
  smile2pay serve --gallery shop --host 0.0.0.0 --port 9000
endpoints: POST /v1/verify, /v1/enroll, /v1/identify; GET /v1/users, /v1/users/{id}; DELETE /v1/users/{id};
GET /healthz (no key), /docs (API reference), /kiosk (browser till); see docs/integration.md""")
def cmd_serve(args) -> tuple[Any, int]:
    """Run the HTTP service (API reference at /docs).

    Needs the server extra. Keys: SMILE2PAY_API_KEY (admin), SMILE2PAY_KIOSK_API_KEY (verify only)."""
    from ..server.app import serve

    serve(args)
    return {"stopped": True}, 0
