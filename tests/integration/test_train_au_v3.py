"""Recipe v3 (smile2pay_tools.train.au_mix) on a handful of real faces: the FER+ / LFW caches, deduplication, the
label rules, the two stages with resume, the grey-input network and its ONNX export.

Needs the ``train`` extra (torch, onnx); skipped cleanly without it.
"""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_dir, models_dir):
    """Caches of 24 FER+ faces (12 happy, 12 not), 16 LFW faces and 40 CK+ frames, built by the real code."""
    from smile2pay.config import Settings
    from smile2pay_tools.datasets import AUSample, load_ckplus_all
    from smile2pay.pipeline import FacePipeline
    from smile2pay_tools.train.cache import build_cache, load_cache, make_teacher
    from smile2pay_tools.train.sources import FER_VOTES, lfw_role, pixel_md5

    out = tmp_path_factory.mktemp("au_v3")
    pipe = FacePipeline(Settings.from_env(models=str(models_dir)))
    teacher = make_teacher(models_dir)
    rows = list(csv.DictReader(open(Path(data_dir) / "ferplus" / "manifest.csv", encoding="utf-8")))
    happy = [r for r in rows if r["ferplus_majority"] == "happiness" and r["split"] == "FER2013Train"][:12]
    other = [r for r in rows if r["ferplus_majority"] in ("neutral", "surprise") and r["split"] == "FER2013Train"][:12]
    fr = happy + other
    build_cache([AUSample(str(Path(data_dir) / r["path"]), "", frozenset(), "ferplus") for r in fr], out / "fer.npz",
                pipe, teacher, identity=False, progress=False)
    fer = load_cache(out / "fer.npz")
    by = {str(Path(data_dir) / r["path"]): r for r in fr}
    fer["votes"] = np.array([[float(by[p][f"votes_{v}"]) for v in FER_VOTES] for p in fer["path"]], np.float32)
    fer["split"] = np.array([by[p]["split"] for p in fer["path"]])
    fer["pixel_md5"] = np.array([pixel_md5(p) for p in fer["path"]])
    lr = [r for r in csv.DictReader(open(Path(data_dir) / "lfw" / "manifest.csv", encoding="utf-8"))
          if r["smile_morishita"] in ("0", "1")][:16]
    build_cache([AUSample(str(Path(data_dir) / r["path"]), r["subject"], frozenset(), "lfw", "", r["label"])
                 for r in lr], out / "lfw.npz", pipe, teacher, identity=False, progress=False)
    lfw = load_cache(out / "lfw.npz")
    sm = {str(Path(data_dir) / r["path"]): int(r["smile_morishita"]) for r in lr}
    lfw["smile"] = np.array([sm[p] for p in lfw["path"]])
    lfw["role"] = np.array([lfw_role(s) for s in lfw["subject"]])
    ck_s = load_ckplus_all(data_dir)
    ck_s = [s for s in ck_s if "6" in "".join(map(str, s.aus))][:20] + [s for s in ck_s if s.neutral][:20]
    build_cache(ck_s, out / "ck.npz", pipe, teacher, identity=False, progress=False)
    return out, load_cache(out / "ck.npz"), fer, lfw


def test_dedup_masks_drop_pixel_identical_images():
    from smile2pay_tools.train.sources import dedup_test_mask, dedup_train_mask

    split = np.array(["FER2013Train", "FER2013Test", "FER2013Test", "FER2013Test", "FER2013Valid"])
    md5 = np.array(["a", "a", "b", "b", "c"])
    assert dedup_test_mask(split, md5).tolist() == [False, False, True, False, False]
    assert dedup_train_mask(split, md5).tolist() == [False, False, False, False, True]


def test_fer_smile_target_and_unusable_faces():
    from smile2pay_tools.train.au_mix import fer_smile_target

    votes = np.array([[2, 8, 0, 0, 0, 0, 0, 0, 0, 0],      # happy 8/10
                      [0, 1, 0, 0, 0, 0, 0, 0, 1, 8],      # mostly not a face
                      [5, 0, 5, 0, 0, 0, 0, 0, 0, 0]], np.float32)
    share, usable = fer_smile_target(votes)
    assert share[0] == pytest.approx(0.8) and usable.tolist() == [True, False, True] and share[2] == 0


def test_two_stages_resume_and_grey_invariant_export(tiny, tmp_path, data_dir):
    import cv2

    from smile2pay_tools.train.au_mix import MixConfig, export_cfg, build_mix, load_net, train_stage
    from smile2pay_tools.train.au_train import export_onnx
    from smile2pay_tools.train.run import torch_onnx_max_diff

    _, ck, fer, lfw = tiny
    cfg = MixConfig(input_size=32, width=8, emb_dim=16, batch=8, base_epochs=1, fine_epochs=2, base_fer_per_epoch=16,
                    fine_fer_per_epoch=8, min_class=3)
    base = build_mix(None, None, fer, np.ones(len(fer["path"]), bool), lfw, np.ones(len(lfw["path"]), bool), cfg,
                     teacher=False)
    assert base.info["n_fer"] == len(fer["path"]) and base.class_keys == []
    j12 = list(cfg.aus).index(12)
    happy = fer["votes"][:, 1] >= 5
    assert (base.targets[:len(fer["path"])][happy, j12] > 0.5).all()
    net, hist = train_stage(base, cfg, "base", tmp_path / "base", progress=False)
    assert len(hist) == 1 and np.isfinite(hist[0]["loss"])
    fine = build_mix(ck, np.ones(len(ck["path"]), bool), fer, np.ones(len(fer["path"]), bool), lfw,
                     np.ones(len(lfw["path"]), bool), cfg, teacher=True)
    assert fine.info["n_ck"] == len(ck["path"]) and "calibration" in fine.info
    # pseudo-labels never touch AU6/AU12 (human labels own those) and weigh by the teacher's agreement
    for n in fine.info.get("pseudo_aus", []):
        assert n not in ("AU6", "AU12")
    small = dataclasses.replace(cfg, fine_epochs=1)
    train_stage(fine, small, "fine", tmp_path / "fine", init=tmp_path / "base" / "checkpoint.pt", progress=False)
    # resume: same run, more epochs is a different run (afresh); the same run again resumes at its end
    _, h2 = train_stage(fine, small, "fine", tmp_path / "fine", init=tmp_path / "base" / "checkpoint.pt",
                        progress=False)
    assert [r["epoch"] for r in h2] == [1]
    net, mcfg, _ = load_net(tmp_path / "fine" / "checkpoint.pt")
    path = export_onnx(net, tmp_path / "au.onnx", export_cfg(mcfg))
    assert torch_onnx_max_diff(net, path, ck["crops"][:8], mcfg.input_size) < 1e-4
    # grey inside the graph: a colour LFW crop and its grey copy give the same probabilities
    from smile2pay_tools.bench.au_population import model_scores

    col = lfw["crops"][:6]
    grey = np.stack([cv2.cvtColor(cv2.cvtColor(c, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) for c in col])
    pc, _ = model_scores(path, col)
    pg, _ = model_scores(path, grey)
    assert np.abs(pc - pg).max() < 0.02
    assert np.abs(col.astype(int) - grey.astype(int)).max() > 20          # the inputs really differ
