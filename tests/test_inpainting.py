"""LID-regularised GAN inpainting: networks, regularisers, training, resume, runs and the CLI."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.data import load_dataset
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.generative.inpainting import (
    FeatureExtractor,
    Inpainter,
    InpaintSettings,
    composite,
    corrupt,
    ilid,
    lid_gap,
    plid,
    train_inpainter,
)
from trustlab.metrics.lid import lid, lid_per_set
from trustlab.models import create_model
from trustlab.models.inpainting import InpaintDiscriminator, InpaintGenerator, local_crops
from trustlab.results import RunStore

TINY = {"epochs": 2, "batch_size": 8, "width": 4, "k": 5, "extractor_epochs": 0}


def _images(n: int = 24, size: int = 16, c: int = 3, seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, c, 1, 1, generator=g)
    x = (base + 0.2 * torch.rand(n, c, size, size, generator=g)).clamp(0, 1)
    y = torch.arange(n) % 2
    return ArrayDataset(x, y, ["a", "b"], [0.5] * c, [0.25] * c, name="toy")


# -- datasets ------------------------------------------------------------------------------------
def test_photo_patches_train_and_test_come_from_disjoint_regions() -> None:
    train, test = load_dataset("photo-patches", "train"), load_dataset("photo-patches", "test")
    assert train.x.shape[1:] == (3, 32, 32) and test.x.shape[1:] == (3, 32, 32)
    assert len(train) == 9553 and len(test) == 2009
    assert set(train.y.tolist()) == set(test.y.tolist()) == set(range(6))
    seen = {bytes(p.mul(255).round().to(torch.uint8).numpy()) for p in train.x}
    assert not any(bytes(p.mul(255).round().to(torch.uint8).numpy()) in seen for p in test.x)


def test_lfw_faces_are_the_hundred_faces_cropped() -> None:
    import skimage.data

    train, test = load_dataset("lfw-faces", "train"), load_dataset("lfw-faces", "test")
    assert train.x.shape == (80, 1, 24, 24) and test.x.shape == (20, 1, 24, 24)
    faces = torch.from_numpy(skimage.data.lfw_subset()[:100]).float()[:, None, :24, :24]
    assert torch.allclose(torch.cat([train.x, test.x]), faces, atol=1 / 255)
    assert train.num_classes == 1 and int(train.y.max()) == 0


# -- networks ------------------------------------------------------------------------------------
def test_generator_and_discriminator_shapes() -> None:
    g = InpaintGenerator(3, width=4)
    with torch.no_grad():
        out = g(torch.rand(2, 4, 24, 32))
    assert out.shape == (2, 3, 24, 32) and float(out.min()) >= 0 and float(out.max()) <= 1
    d = InpaintDiscriminator(1, (24, 24), width=4)
    assert d(torch.rand(3, 1, 24, 24), torch.zeros(3, 1, 24, 24)).shape == (3,)
    with pytest.raises(InputError, match="multiples of 4"):
        g(torch.rand(1, 4, 30, 30))
    with pytest.raises(InputError, match="masked image and the mask"):
        g(torch.rand(1, 3, 32, 32))


def test_local_crops_centre_on_the_hole_and_stay_inside() -> None:
    x = torch.arange(16 * 16, dtype=torch.float32).view(1, 1, 16, 16).repeat(3, 1, 1, 1)
    m = torch.zeros(3, 1, 16, 16)
    m[0, :, 6:10, 6:10] = 1  # centred hole: the window is rows/cols 4..11
    m[1, :, 0:2, 14:16] = 1  # top-right corner: moved inside
    crops = local_crops(x, m, 8)  # the third mask is empty: the image's centre
    assert torch.equal(crops[0, 0], x[0, 0, 4:12, 4:12])
    assert torch.equal(crops[1, 0], x[1, 0, 0:8, 8:16])
    assert torch.equal(crops[2, 0], x[2, 0, 4:12, 4:12])
    x.requires_grad_(True)
    local_crops(x, m, 8).sum().backward()
    assert float(x.grad.sum()) == 3 * 64


def test_corrupt_and_composite_keep_the_known_pixels() -> None:
    x, out = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    m = torch.zeros(2, 1, 16, 16)
    m[:, :, 4:8, 4:8] = 1
    inp = corrupt(x, m)
    hole = m.expand(-1, 3, -1, -1) > 0
    assert inp.shape == (2, 4, 16, 16) and float(inp[:, :3][hole].abs().max()) == 0
    y = composite(x, out, m)
    assert torch.equal(y[:, :, :4], x[:, :, :4])
    assert torch.equal(y[:, :, 4:8, 4:8], out[:, :, 4:8, 4:8])


# -- the regularisers ----------------------------------------------------------------------------
def test_lid_per_set_equals_one_set_at_a_time() -> None:
    q, r = torch.randn(3, 7, 5, dtype=torch.float64), torch.randn(3, 11, 5, dtype=torch.float64)
    got = lid_per_set(q, r, k=6, estimator="mom")
    want = torch.stack([lid(q[b], r[b], 6, "mom", exclude_self=False) for b in range(3)])
    assert torch.allclose(got, want)
    with pytest.raises(InputError, match="same number of sets"):
        lid_per_set(q, r[:2], k=3)
    with pytest.raises(InputError, match="neighbours"):
        lid_per_set(q, r, k=12)


def test_ilid_and_plid_equal_their_definitions() -> None:
    torch.manual_seed(0)
    rest, orig = torch.randn(10, 8, dtype=torch.float64), torch.randn(10, 8, dtype=torch.float64)
    want = lid(rest, orig, 5, "mom", exclude_self=False).clamp_max(8).mean()
    assert torch.allclose(ilid(rest, orig, k=5), want)
    fr = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    fo = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    masks = torch.zeros(2, 1, 6, 6, dtype=torch.float64)
    masks[0, :, :2, :2] = 1  # exactly the top-left cell of a 3x3 map
    masks[1] = 1  # everything
    per = lid_per_set(fr.flatten(2).transpose(1, 2), fo.flatten(2).transpose(1, 2), 4, "mom")
    per = per.clamp_max(4)
    want = (per[0, 0] + per[1].mean()) / 2
    assert torch.allclose(plid(fr, fo, masks, k=4), want)
    assert float(plid(fr, fo, torch.zeros_like(masks), k=4)) == 0.0


def test_lid_gap_is_zero_for_a_perfect_restoration() -> None:
    f = torch.randn(40, 16)
    gap = lid_gap(f, f.clone(), k=10)
    assert gap["lid_gap"] == pytest.approx(0.0, abs=1e-5)
    assert lid_gap(f + 2.0 * torch.randn(40, 16), f, k=10)["lid_gap"] > 0.1


def test_regularisers_have_finite_gradients_for_the_generator_and_none_for_the_extractor() -> None:
    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32)
    m = torch.zeros(8, 1, 32, 32)
    m[:, :, 8:24, 8:24] = 1
    gen = InpaintGenerator(3, width=4)
    ext = FeatureExtractor(create_model("cnn-small", 2, 3, 32), (3, 32, 32))
    fake = composite(x, gen(corrupt(x, m)), m)
    f_img, f_map = ext(fake)
    with torch.no_grad():
        o_img, o_map = ext(x)
    loss = ilid(f_img, o_img, k=5) + plid(f_map, o_map, m, k=5)
    assert math.isfinite(float(loss.detach()))
    loss.backward()
    grads = [p.grad for p in gen.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None and not p.requires_grad for p in ext.parameters())
    ext.train()
    assert not ext.model.training  # fixed: BatchNorm or dropout never switch to training


def test_feature_extractor_refuses_what_it_cannot_use() -> None:
    with pytest.raises(InputError, match="classifier"):
        FeatureExtractor(torch.nn.Linear(3, 3), (3, 32, 32))
    with pytest.raises(InputError, match="feature map"):
        FeatureExtractor(create_model("mlp", 2, 3, 32), (3, 32, 32))


# -- training and resume -------------------------------------------------------------------------
def test_training_is_seeded_and_logs_every_epoch() -> None:
    data = _images()
    a = train_inpainter(data, TINY, seed=3, progress=False, test=data.x[:6])
    b = train_inpainter(data, TINY, seed=3, progress=False)
    for pa, pb in zip(a.generator.parameters(), b.generator.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert [h["epoch"] for h in a.history] == [1.0, 2.0]
    assert {"rec", "adv", "d_loss", "ilid", "plid", "test_psnr", "test_ssim"} <= set(a.history[0])
    assert a.history[0]["ilid"] > 0 and a.history[0]["plid"] > 0
    none = {**TINY, "lambda_ilid": 0, "lambda_plid": 0}
    off = train_inpainter(data, none, seed=3, progress=False)
    assert off.history[0]["ilid"] == 0 and off.history[0]["plid"] == 0


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    data = _images()
    settings = {**TINY, "epochs": 3}
    whole = train_inpainter(data, settings, seed=1, progress=False)
    ckpt = tmp_path / "last.safetensors"

    def stop(epoch: int, row: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_inpainter(data, settings, seed=1, progress=False, checkpoint=ckpt, on_epoch=stop)
    resumed = train_inpainter(data, settings, seed=1, progress=False, checkpoint=ckpt)
    for pa, pb in zip(whole.generator.parameters(), resumed.generator.parameters(), strict=True):
        assert torch.equal(pa, pb)
    for pa, pb in zip(
        whole.discriminator.parameters(), resumed.discriminator.parameters(), strict=True
    ):
        assert torch.equal(pa, pb)
    assert [h["rec"] for h in whole.history] == [h["rec"] for h in resumed.history]
    with pytest.raises(InputError, match="different lr"):
        train_inpainter(data, {**settings, "lr": 1e-3}, seed=1, progress=False, checkpoint=ckpt)
    with pytest.raises(InputError, match="different seed"):
        train_inpainter(data, settings, seed=2, progress=False, checkpoint=ckpt)
    with pytest.raises(InputError, match="training images"):
        train_inpainter(_images(seed=5), settings, seed=1, progress=False, checkpoint=ckpt)


def test_training_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    train_inpainter(_images(), {**TINY, "epochs": 1}, seed=0, progress=False)
    assert torch.equal(torch.rand(3), want)


def test_save_load_and_evaluate(tmp_path: Path) -> None:
    data = _images()
    inp = train_inpainter(data, {**TINY, "epochs": 1}, seed=0, progress=False)
    inp.save(tmp_path)
    back = Inpainter.load(tmp_path)
    m = inp.masks(6, seed=2)
    assert torch.equal(inp.restore(data.x[:6], m), back.restore(data.x[:6], m))
    ev = back.evaluate(data.x[:12])
    assert set(ev) >= {"psnr", "ssim", "l1_hole", "lid_gap", "hole_fraction"}
    assert ev["hole_fraction"] == pytest.approx(0.25) and math.isfinite(ev["psnr"])
    grid = back.save_grid(tmp_path / "grid.png", data.x[:4])
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError, match="trained on"):
        back.restore(torch.rand(2, 1, 16, 16), torch.zeros(2, 1, 16, 16))


def test_bad_settings_and_data_are_clear_errors() -> None:
    with pytest.raises(InputError, match="lambda_ilid"):
        train_inpainter(_images(), {"lambda_ilid": -1}, progress=False)
    with pytest.raises(InputError, match="mask"):
        train_inpainter(_images(), {"mask": "circle"}, progress=False)
    one_class = ArrayDataset(torch.rand(8, 1, 16, 16), torch.zeros(8, dtype=torch.int64), ["f"])
    with pytest.raises(InputError, match="extractor_epochs"):
        train_inpainter(one_class, {"extractor_epochs": 1, "width": 4}, progress=False)
    two_names_one_label = ArrayDataset(one_class.x, one_class.y, ["a", "b"])  # e.g. a subset
    with pytest.raises(InputError, match="have 1"):
        train_inpainter(two_names_one_label, {"extractor_epochs": 1, "width": 4}, progress=False)
    with pytest.raises(InputError, match="multiples of 4"):
        train_inpainter(_images(size=18), TINY, progress=False)
    with pytest.raises(InputError, match="does not exist"):
        train_inpainter(_images(), {**TINY, "extractor_checkpoint": "nope.safetensors"})


def test_an_extractor_checkpoint_is_checked_before_a_run_exists(
    _isolated_home: Path, tmp_path: Path
) -> None:
    from trustlab.train.checkpoint import save_model
    from trustlab.workflows.inpaint import run_inpaint

    with pytest.raises(InputError, match="does not exist"):
        run_inpaint("lfw-faces", {**_faces_settings(), "extractor_checkpoint": "nope.safetensors"})
    mlp = tmp_path / "mlp.safetensors"
    save_model(create_model("mlp", 2, 1, 24), mlp)
    with pytest.raises(InputError, match="feature map"):
        run_inpaint("lfw-faces", {**_faces_settings(), "extractor_checkpoint": str(mlp)})
    assert RunStore().list() == []
    small = tmp_path / "small.safetensors"
    save_model(create_model("cnn-small", 2, 1, 24), small)
    run, inp = run_inpaint(
        "lfw-faces", {**_faces_settings(), "epochs": 1, "extractor_checkpoint": str(small)},
        samples=2, progress=False,
    )  # fmt: skip
    assert run.status == "finished" and inp.extractor_spec["name"] == "cnn-small"


# -- runs and the CLI ----------------------------------------------------------------------------
FACES = ["--dataset", "lfw-faces", "--epochs", "2", "--batch-size", "16", "--width", "4",
         "--k", "5", "--extractor-epochs", "0", "--samples", "4", "--quiet"]  # fmt: skip


def test_cli_inpaint_train_eval_and_resume(_isolated_home: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["inpaint", "train", *FACES])
    assert res.exit_code == 0, res.output
    store = RunStore()
    (run,) = store.list()
    assert run.kind == "inpaint" and run.status == "finished"
    assert {"psnr", "ssim", "l1_hole", "lid_gap", "train_images"} <= set(run.summary)
    assert len(run.metrics()) == 2 and (run.dir / "grid.png").exists()
    assert (run.dir / "checkpoints" / "last.safetensors").exists()
    ev = runner.invoke(app, ["inpaint", "eval", str(run.id), "--mask", "free-form", "--seed", "3"])
    assert ev.exit_code == 0, ev.output
    assert "psnr" in ev.output and (run.dir / "eval-free-form-seed3.png").exists()
    saved = json.loads((run.dir / "eval-free-form-seed3.json").read_text())
    assert saved["mask"] == "free-form" and saved["seed"] == 3 and "psnr" in saved
    # an interrupted run resumes from its checkpoint and ends where an uninterrupted one does
    from trustlab.workflows import inpaint as wf

    calls = {"n": 0}
    real = wf.train_inpainter

    def dying(*a, **kw):
        def stop(epoch, row):
            kw_on(epoch, row)
            calls["n"] += 1
            raise KeyboardInterrupt

        kw_on = kw["on_epoch"]
        return real(*a, **{**kw, "on_epoch": stop})

    wf.train_inpainter = dying
    try:
        with pytest.raises(KeyboardInterrupt):
            wf.run_inpaint("lfw-faces", _faces_settings(), samples=4, progress=False)
    finally:
        wf.train_inpainter = real
    broken = store.list()[0] if store.list()[0].id != run.id else store.list()[1]
    assert broken.refresh().status == "interrupted" and len(broken.metrics()) == 1
    res = runner.invoke(app, ["resume", str(broken.id), "--quiet"])
    assert res.exit_code == 0, res.output
    done = broken.refresh()
    assert done.status == "finished" and len(done.metrics()) == 2
    assert done.summary["psnr"] == pytest.approx(run.summary["psnr"], abs=0)


def _faces_settings() -> dict:
    return {"epochs": 2, "batch_size": 16, "width": 4, "k": 5, "extractor_epochs": 0}


def test_cli_bad_input_exits_2_and_stores_nothing(_isolated_home: Path) -> None:
    runner = CliRunner()
    for args in (
        ["inpaint", "train", "--dataset", "moving-shapes", "--epochs", "1"],
        ["inpaint", "train", "--dataset", "lfw-faces", "--extractor-epochs", "2"],  # 1 class
        ["inpaint", "train", "--mask", "circle"],
        ["inpaint", "eval", "999"],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert "error:" in res.output
    assert RunStore().list() == []


def test_cli_defaults_are_the_settings_defaults() -> None:
    from trustlab.cli.inpaint import inpaint_train_cmd

    flags = {k: p.default for k, p in inspect.signature(inpaint_train_cmd).parameters.items()}
    s = InpaintSettings()
    for key in ("epochs", "batch_size", "lr", "mask", "eval_mask", "lambda_adv", "lambda_ilid",
                "lambda_plid", "k", "estimator", "width", "extractor", "extractor_epochs",
                "extractor_checkpoint"):  # fmt: skip
        assert flags[key] == getattr(s, key), key


def test_run_config_records_every_setting(_isolated_home: Path) -> None:
    from trustlab.workflows.inpaint import run_inpaint

    run, _ = run_inpaint("lfw-faces", {**_faces_settings(), "epochs": 1}, samples=2, progress=False)
    cfg = json.loads((run.dir / "config.json").read_text())
    assert set(InpaintSettings.model_fields) <= set(cfg)
    assert cfg["dataset"] == "lfw-faces"


def test_a_folder_of_your_own_images_trains_through_image_folder(
    _isolated_home: Path, tmp_path: Path
) -> None:
    import numpy as np
    from skimage.io import imsave

    from trustlab.workflows.inpaint import evaluate_inpaint, run_inpaint

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for cls in ("cats", "dogs"):
            folder = tmp_path / "imgs" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                img = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
                imsave(folder / f"{i}.png", img, check_contrast=False)
    run, inp = run_inpaint(
        "image-folder", {**_faces_settings(), "epochs": 1, "extractor_epochs": 1},
        data_root=tmp_path / "imgs", samples=3, progress=False,
    )  # fmt: skip
    assert inp.shape == (3, 16, 16) and run.summary["train_images"] == 12
    metrics, grid = evaluate_inpaint(run.id, mask="rectangles", samples=2)
    assert grid.exists() and math.isfinite(metrics["psnr"])
