"""``smile2pay train-au``: train, evaluate (k-fold by subject) and export the AU network.

Needs the developer tools with their ``train`` extra (``pip install -e './tools[train]'`` from the source folder: torch, onnx, onnxscript).
"""
from __future__ import annotations

from typing import Any

from .main import command


def _cfg_train_au(p):
    p.add_argument("--data", help="data folder with ckplus48/, ckplus_neutral_peak48/, lfw/ "
                                  "(default: SMILE2PAY_DATA or ../shared/data)")
    p.add_argument("--out", default="results/au_train", help="output folder (cache, checkpoints, reports, ONNX)")
    p.add_argument("--export", help="where to write the ONNX model (default: OUT/au_mobile.onnx)")
    p.add_argument("--cv", type=int, default=0, help="k for k-fold-by-subject evaluation before the final model "
                                                      "(0: skip; the shipped model's numbers use 5)")
    p.add_argument("--folds", type=int, nargs="*", help="run only these CV folds (parallel workers)")
    p.add_argument("--skip-final", action="store_true", help="only run the CV folds")
    p.add_argument("--report-only", action="store_true",
                   help="only rebuild OUT/cv_report.json from the folds' out-of-fold files (OUT/cv/fold*/oof.npz)")
    p.add_argument("--lfw", type=int, default=4000, help="LFW faces pseudo-labelled by the blendshape teacher")
    p.add_argument("--csv", action="append", default=[], help="extra ground truth: manifest path,subject,au_codes")
    p.add_argument("--ckplus-original", help="official CK+ folder (cohn-kanade-images/ + FACS/)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the recipe's)")
    p.add_argument("--input-size", type=int, help="network input side in pixels (default: the recipe's)")
    p.add_argument("--width", type=int, help="v3: network width (channels of the first stage; default 32)")
    p.add_argument("--batch", type=int, help="batch size (default: the recipe's)")
    p.add_argument("--lr", type=float, help="learning rate (default: the recipe's)")
    p.add_argument("--seed", type=int, help="random seed (default: the recipe's)")
    p.add_argument("--threads", type=int, help="torch threads (default 1)")
    p.add_argument("--smoke", action="store_true", help="tiny data, tiny net, 1 epoch: seconds (CI)")
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    p.add_argument("--recipe", choices=["v2", "v3"], default="v3",
                   help="v3 (default, shipped): base on FER+ and LFW, then CK+ fine-tunes (see smile2pay_tools.train.au_mix); "
                        "v2: the CK+-only recipe of the earlier model")
    p.add_argument("--workers", type=int, default=2, help="v3: processes that build the FER+/LFW caches")
    p.add_argument("--skip-base", action="store_true", help="v3: reuse OUT/base/checkpoint.pt as it is")
    p.add_argument("--base-epochs", type=int, help="v3: epochs of the FER+/LFW base stage (default: the recipe's)")
    p.add_argument("--fine-epochs", type=int, help="v3: epochs of the CK+ fine-tune stage (default: the recipe's)")
    p.add_argument("--distill-weight", type=float,
                   help="v3: mix the identity network's smile teacher into the AU6/AU12 targets of FER+ and LFW "
                        "(0-1; default 0, as shipped; smile2pay_tools.train.id_teacher, measured in docs/au.md)")
    p.add_argument("--ensemble-of", nargs="+", metavar="ONNX",
                   help="combine these trained AU models (same recipe, other seeds) into one ONNX file at "
                        "--export (mean probabilities, concatenated unit-norm embedding) and exit")


@command("train-au", _cfg_train_au, examples="""\
examples:
  smile2pay train-au --smoke --out /tmp/au                 # seconds: checks the set-up
  smile2pay train-au --cv 5 --out results/au_train         # the shipped recipe (v3), k-fold numbers first""")
def cmd_train_au(args) -> tuple[Any, int]:
    """Train and export the AU (smile) model.

    k-fold evaluation by subject, then the final model as ONNX. Needs the train extra (torch)."""
    from ..config import data_dir
    from ..errors import Smile2PayError

    try:
        from smile2pay_tools.train.run import run
    except ImportError as e:  # torch / onnx missing
        raise Smile2PayError(f"train-au needs the developer tools with their train extra (pip install -e "
                             f"'./tools[train]' from the source folder): {e}", code="DEPENDENCY_MISSING") from e
    from ..config import Settings

    settings = Settings.from_env(models=getattr(args, "models", None))
    models_dir = settings.model_dir_candidates()[0]
    if args.ensemble_of:
        from ..models.store import sha256_file
        from smile2pay_tools.train.ensemble import combine_au_onnx

        if not args.export:
            raise Smile2PayError("--ensemble-of needs --export FILE", code="REQUEST_INVALID")
        try:
            path = combine_au_onnx(args.ensemble_of, args.export, note="smile2pay train-au --ensemble-of")
        except (ValueError, OSError) as e:
            raise Smile2PayError(f"cannot combine {args.ensemble_of}: {e}", code="MODEL_LOAD_FAILED") from e
        return {"onnx": str(path), "members": len(args.ensemble_of), "bytes": path.stat().st_size,
                "sha256": sha256_file(path)}, 0
    if args.report_only:
        from smile2pay_tools.train.run import report_from_folds

        return report_from_folds(args.data or data_dir(), models_dir, args.out, k=args.cv or 5), 0
    if args.distill_weight is not None and not 0.0 <= args.distill_weight <= 1.0:
        raise Smile2PayError(f"--distill-weight must be in [0, 1], got {args.distill_weight}", code="REQUEST_INVALID")
    if args.width is not None and not 8 <= args.width <= 256:
        raise Smile2PayError(f"--width must be in [8, 256], got {args.width}", code="REQUEST_INVALID")
    if args.recipe == "v3" and not args.smoke:
        from smile2pay_tools.train.au_mix import run_mix

        return run_mix(args.data or data_dir(), models_dir, args.out, cv=args.cv, folds=args.folds,
                       skip_final=args.skip_final, skip_base=args.skip_base, resume=not args.no_resume,
                       export=args.export, progress=not args.json, workers=args.workers,
                       base_epochs=args.base_epochs, fine_epochs=args.fine_epochs, input_size=args.input_size,
                       batch=args.batch, lr=args.lr, seed=args.seed, threads=args.threads,
                       distill_weight=args.distill_weight, width=args.width), 0
    summary = run(args.data or data_dir(), models_dir, args.out, cv=args.cv, lfw_n=args.lfw, smoke=args.smoke,
                  resume=not args.no_resume, export=args.export, extra_csv=args.csv,
                  ckplus_original=args.ckplus_original, folds=args.folds, skip_final=args.skip_final,
                  progress=not args.json, epochs=args.epochs, input_size=args.input_size, batch=args.batch,
                  lr=args.lr, seed=args.seed, threads=args.threads)
    return summary, 0
