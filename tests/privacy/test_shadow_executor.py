"""Shadow models trained by an executor (trustlab.utils.executor): the same models as in this
process single-threaded, cached as they arrive; a recipe that cannot travel is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trustlab.attacks.privacy import ShadowRecipe, train_shadows
from trustlab.data import load_dataset
from trustlab.errors import InputError
from trustlab.models.spec import ModelSpec
from trustlab.train import TrainSettings
from trustlab.utils.device import single_threaded
from trustlab.utils.executor import LocalExecutor


@pytest.fixture(scope="module")
def setup():
    data = load_dataset("digits", "train").subset(range(120))
    recipe = ShadowRecipe(ModelSpec.for_data("mlp", data), TrainSettings(epochs=1, batch_size=32))
    return recipe, data


def _equal(a, b) -> None:
    for x, y in zip(a.models(), b.models(), strict=True):
        for (name, p), q in zip(x.state_dict().items(), y.state_dict().values(), strict=True):
            assert torch.equal(p, q), name


def test_local_pool_shadows_equal_in_process_ones(setup, tmp_path: Path) -> None:
    recipe, data = setup
    kw = {"seed": 1, "device": "cpu", "progress": False}
    with single_threaded("cpu"):
        here = train_shadows(recipe, data, 3, cache=False, **kw)
    with LocalExecutor(2) as ex:
        pooled = train_shadows(recipe, data, 3, cache=tmp_path, executor=ex, **kw)
    assert pooled.trained == 3 and len(list(pooled.folder.glob("shadow-*.safetensors"))) == 3
    _equal(here, pooled)
    # in memory: the models come back in index order
    _equal(here, train_shadows(recipe, data, 3, cache=False, executor="local", **kw))
    assert train_shadows(recipe, data, 3, cache=tmp_path, executor="local", **kw).trained == 0


def test_a_recipe_that_cannot_be_pickled_is_refused(setup) -> None:
    recipe, data = setup
    lam = ShadowRecipe(recipe.spec, recipe.settings, loss_fn=lambda z, y: z.sum(), key={"x": 1})
    with pytest.raises(InputError, match="cannot be sent there"):
        train_shadows(lam, data, 2, cache=False, executor="local", progress=False)


class _Refuses(LocalExecutor):
    def share(self, obj):
        raise AssertionError("used although every shadow was cached")

    def as_completed(self, tasks):
        raise AssertionError("used although every shadow was cached")


def test_no_executor_is_started_when_every_shadow_is_cached(setup, tmp_path: Path) -> None:
    recipe, data = setup
    kw = {"seed": 2, "device": "cpu", "progress": False, "cache": tmp_path}
    assert train_shadows(recipe, data, 2, **kw).trained == 2
    assert train_shadows(recipe, data, 2, executor=_Refuses(1), **kw).trained == 0
