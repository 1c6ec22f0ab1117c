"""DPGAN (trustlab.generative): the networks, the privacy it reports, determinism, save/load, bad
input, and `trustlab dpgan train`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from trustlab.errors import InputError
from trustlab.generative import DPGAN, DPGANSettings, parse_settings, train_dpgan
from trustlab.generative.dpgan import _hooks_off
from trustlab.models.gan import SHAPES, Discriminator, Generator
from trustlab.train.dp import sample_rate

SHAPE_LIST = list(SHAPES)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """128 real digits images (1x16x16), the labels dropped."""
    from trustlab.data.datasets import load_dataset

    return load_dataset("digits").x[:128]


def _train(x: torch.Tensor, seed: int = 0, **kw: object) -> DPGAN:
    settings = {"epochs": 1, "batch_size": 32, "latent_dim": 16, **kw}
    return train_dpgan(x, settings, seed=seed)


# -- the networks --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPE_LIST)
def test_generator_and_discriminator_shapes(shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    gen, disc = Generator(latent_dim=8, shape=shape), Discriminator(shape=shape)
    x = gen(torch.randn(3, 8)).detach()
    assert x.shape == (3, *shape)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert disc(x).shape == (3,)


def test_discriminator_has_no_batchnorm_and_opacus_accepts_it() -> None:
    from opacus.validators import ModuleValidator

    for shape in SHAPE_LIST:
        disc = Discriminator(shape=shape)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in disc.modules())
        assert ModuleValidator.validate(disc, strict=False) == []


def test_unsupported_shape_names_the_supported_ones() -> None:
    with pytest.raises(InputError, match=r"\(1, 28, 28\)"):
        Generator(shape=(1, 20, 20))
    with pytest.raises(InputError, match=r"\(3, 32, 32\)"):
        Discriminator(shape=(3, 28, 28))
    with pytest.raises(InputError, match="latent codes"):
        Generator(latent_dim=8, shape=(1, 16, 16))(torch.randn(2, 9))


# -- privacy -------------------------------------------------------------------------------------
def test_reported_epsilon_equals_the_accountants_for_its_steps(digits: torch.Tensor) -> None:
    from opacus.accountants import RDPAccountant

    gan = _train(digits, noise_multiplier=1.1, epochs=2)
    q = sample_rate(len(digits), 32)
    assert gan.sample_rate == q and gan.noise_multiplier == 1.1
    assert gan.steps == 2 * int(1 / q)  # one accountant step per discriminator step, no more
    acc = RDPAccountant()
    for _ in range(gan.steps):
        acc.step(noise_multiplier=1.1, sample_rate=q)
    assert gan.epsilon == pytest.approx(acc.get_epsilon(delta=1e-5), rel=1e-12)
    assert [h["epoch"] for h in gan.history] == [1.0, 2.0]
    assert gan.history[-1]["epsilon"] == gan.epsilon > gan.history[0]["epsilon"] > 0


def test_target_epsilon_is_met(digits: torch.Tensor) -> None:
    gan = _train(digits, epsilon=2.0)
    assert 1.9 <= gan.epsilon <= 2.0
    assert gan.report()["target_epsilon"] == 2.0 and gan.noise_multiplier > 0


def test_non_private_reports_infinite_epsilon(digits: torch.Tensor) -> None:
    gan = _train(digits)
    assert math.isinf(gan.epsilon) and gan.noise_multiplier == 0.0
    assert not DPGANSettings(epochs=1).private


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # Opacus' hooks, harmless
def test_fake_data_gradient_is_not_charged(digits: torch.Tensor) -> None:
    """Inside _hooks_off Opacus records no per-sample gradient (so no clipping, noise or
    accountant step); only the real-data backward pass is per-sample."""
    from opacus import GradSampleModule

    net = GradSampleModule(Discriminator(shape=(1, 16, 16)))
    with _hooks_off(net):
        net(digits[:4]).mean().backward()
    assert all(getattr(p, "grad_sample", None) is None for p in net.parameters())
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=True)
    net(digits[:4]).mean().backward()
    assert all(p.grad_sample.shape[0] == 4 for p in net.parameters())
    # a whole run: the accountant composed exactly the discriminator's Poisson steps
    gan = _train(digits, noise_multiplier=1.0, batch_size=64, epochs=3)
    assert gan.steps == 3 * int(1 / sample_rate(len(digits), 64))


def test_empty_poisson_batches_do_not_crash(digits: torch.Tensor) -> None:
    # q = 1/20 over 40 images: an empty sample is likely in 20 steps; the seed below has some
    gan = _train(digits[:40], noise_multiplier=1.0, batch_size=2)
    assert gan.steps == 20 and math.isfinite(gan.epsilon)
    assert all(math.isfinite(h["d_loss"]) for h in gan.history)


# -- determinism, sampling, save/load ------------------------------------------------------------
def test_same_seed_same_gan_and_samples(digits: torch.Tensor) -> None:
    a, b = _train(digits, noise_multiplier=1.0), _train(digits, noise_multiplier=1.0)
    assert torch.equal(a.sample(8, seed=3), b.sample(8, seed=3))
    assert a.history == [dict(h, seconds=a.history[i]["seconds"]) for i, h in enumerate(b.history)]
    assert not torch.equal(a.sample(8, seed=3), a.sample(8, seed=4))
    c = _train(digits, seed=1, noise_multiplier=1.0)
    assert not torch.equal(a.sample(8, seed=3), c.sample(8, seed=3))
    x = a.sample(8)
    assert x.shape == (8, 1, 16, 16) and x.device.type == "cpu"
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    a.generator.train()
    a.sample(2)
    assert a.generator.training  # the mode is restored


def test_save_load_round_trip_and_grid(digits: torch.Tensor, tmp_path: Path) -> None:
    gan = _train(digits, noise_multiplier=1.0)
    path = gan.save(tmp_path / "gan")
    assert path.name == "dpgan.safetensors" and (tmp_path / "gan" / "dpgan.json").is_file()
    back = DPGAN.load(tmp_path / "gan")
    assert torch.equal(back.sample(16, seed=5), gan.sample(16, seed=5))
    assert (back.epsilon, back.steps, back.settings) == (gan.epsilon, gan.steps, gan.settings)
    assert back.history == gan.history
    x = back.discriminator(digits[:4])
    assert torch.allclose(x, gan.discriminator(digits[:4]))
    png = gan.save_grid(tmp_path / "grid.png", n=10)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plain = _train(digits)  # infinite epsilon survives the JSON sidecar
    assert math.isinf(DPGAN.load(plain.save(tmp_path / "plain")).epsilon)


# -- bad input -----------------------------------------------------------------------------------
def test_bad_input_is_an_input_error(digits: torch.Tensor) -> None:
    with pytest.raises(InputError, match="not both"):
        parse_settings({"epochs": 1, "epsilon": 1.0, "noise_multiplier": 1.0})
    with pytest.raises(InputError, match="not both"):
        _train(digits, epsilon=1.0, noise_multiplier=1.0)
    with pytest.raises(InputError, match="unknown|extra|forbid|not permitted"):
        parse_settings({"epochs": 1, "sigma": 1.0})
    with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
        _train(digits[:, 0])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        _train(digits * 2)
    with pytest.raises(InputError, match="floats"):
        _train((digits * 255).to(torch.uint8))
    with pytest.raises(InputError, match="support image shapes"):
        _train(torch.rand(8, 1, 20, 20))
    with pytest.raises(InputError, match="NaN"):
        _train(torch.full((8, 1, 16, 16), float("nan")))


# -- the command line ----------------------------------------------------------------------------
def test_cli_dpgan_train_stores_a_run(_isolated_home: Path) -> None:
    from trustlab.cli import app
    from trustlab.results import RunStore

    args = ["dpgan", "train", "--dataset", "digits", "--epochs", "1", "--batch-size", "256"]
    out = CliRunner().invoke(
        app, [*args, "--noise-multiplier", "1", "--samples", "9", "--seed", "0", "--quiet",
              "--device", "cpu", "--latent-dim", "16", "--lr", "0.001"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output.strip().splitlines()[-1])
    (run,) = RunStore(_isolated_home).list()
    assert run.kind == "dpgan" and run.status == "finished" and doc["run"] == run.id
    names = {a["name"] for a in run.artifacts()}
    assert {"samples.png", "dpgan.safetensors", "dpgan.json"} <= names
    assert (run.dir / "samples.png").read_bytes()[:4] == b"\x89PNG"
    assert run.summary["epsilon"] == doc["epsilon"] > 0 and run.summary["steps"] == doc["steps"]
    assert [m["epsilon"] for m in run.metrics("epoch")] == [doc["epsilon"]]
    assert run.config["dataset"] == "digits" and run.config["noise_multiplier"] == 1.0
    gan = DPGAN.load(run.dir)
    assert gan.epsilon == doc["epsilon"]


def test_cli_dpgan_bad_input_exits_2_and_stores_nothing(_isolated_home: Path) -> None:
    from trustlab.cli import app
    from trustlab.results import RunStore

    runner = CliRunner()
    both = runner.invoke(app, ["dpgan", "train", "--epsilon", "1", "--noise-multiplier", "1"])
    assert both.exit_code == 2 and "not both" in both.output
    video = runner.invoke(app, ["dpgan", "train", "--dataset", "moving-shapes", "--epochs", "1"])
    assert video.exit_code == 2 and "error:" in video.output
    zero = runner.invoke(app, ["dpgan", "train", "--epochs", "0"])
    assert zero.exit_code == 2
    assert RunStore(_isolated_home).list() == []


# -- does it learn? ------------------------------------------------------------------------------
@pytest.mark.slow
def test_dpgan_on_digits_does_not_collapse() -> None:
    """A classifier trained on the real digits labels a private GAN's samples with several
    classes (a collapsed generator would give one)."""
    from trustlab.data.datasets import load_dataset
    from trustlab.models import create_model
    from trustlab.train import Trainer

    data = load_dataset("digits")
    torch.manual_seed(0)
    clf = create_model("mlp", num_classes=10, in_channels=1, image_size=16)
    Trainer(clf, epochs=3, lr=0.05, progress=False).fit(data)
    gan = train_dpgan(data.x, {"epochs": 3, "noise_multiplier": 1.0, "lr": 1e-3}, seed=0)
    with torch.no_grad():
        labels = clf.eval()(gan.sample(200)).argmax(1)
    assert len(torch.unique(labels)) >= 3
