"""``smile2pay verify`` (the payment decision) and ``smile2pay serve`` (the HTTP service).

verify exit codes: 0 approved, 1 declined, 2 bad input or setup.
"""
from __future__ import annotations

from typing import Any

from .cli import command, settings_from
from .cli_gallery import _gallery_args, _gsettings


def _cfg_verify(p):
    _gallery_args(p)
    p.add_argument("user_id")
    p.add_argument("images", nargs="+", help="the burst of frames, in time order")
    p.add_argument("--require", default="AU6+AU12", help="AU rule, e.g. 'AU6+AU12' or 'AU6+AU12-AU4'")
    p.add_argument("--liveness", choices=["burst", "none"], default="burst",
                   help="'none' (single frame, liveness NOT checked) needs --allow-single-frame")
    p.add_argument("--allow-single-frame", action="store_true")
    p.add_argument("--nonce", help="single-use request nonce (a replay is declined with REPLAY)")
    p.add_argument("--policy", help="calibration file (default: the one shipped for the pack)")
    p.add_argument("--far", type=float, default=1e-4, help="operating point taken from the policy file")
    p.add_argument("--threads", type=int)


@command("verify", _cfg_verify)
def cmd_verify(args) -> tuple[Any, int]:
    from .api import Smile2Pay

    with Smile2Pay(args.gallery, settings=settings_from(args), gallery_settings=_gsettings(args),
                   policy=args.policy, far=args.far, allow_single_frame=args.allow_single_frame,
                   create=False) as s2p:
        d = s2p.verify(args.user_id, args.images, require=args.require, liveness=args.liveness, nonce=args.nonce)
    return d.to_dict(), 0 if d.approved else 1


def _cfg_serve(p):
    _gallery_args(p, create=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--api-key-file", help="file holding the API key (default: SMILE2PAY_API_KEY)")
    p.add_argument("--policy")
    p.add_argument("--far", type=float, default=1e-4)
    p.add_argument("--threads", type=int)


@command("serve", _cfg_serve)
def cmd_serve(args) -> tuple[Any, int]:
    from .server.app import serve

    serve(args)
    return {"stopped": True}, 0
