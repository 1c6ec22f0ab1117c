"""load_user_model: a user's own nn.Module class with weights from safetensors, never a pickle."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from trustlab.errors import InputError
from trustlab.train.checkpoint import load_user_model
from trustlab.utils.imports import load_object

NETS = """
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 3, width: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        return self.head(h.mean(dim=(2, 3)))


class NotAModel:
    pass


def make():
    return TinyNet()
"""


class _Marker:
    """Unpickling this creates a marker file: the test proves it never happens."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.fixture
def nets(tmp_path: Path) -> Path:
    path = tmp_path / "nets.py"
    path.write_text(textwrap.dedent(NETS))
    return path


def _trained(nets: Path, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    net = load_object(f"{nets}:TinyNet", what="model class")(**kwargs)
    net.train()
    net(torch.randn(8, 1, 6, 6))  # moves the BatchNorm running statistics off their defaults
    return net.eval()


def test_loads_the_users_class_with_identical_outputs(nets, tmp_path):
    net = _trained(nets, num_classes=5)
    weights = tmp_path / "tiny.safetensors"
    save_file(net.state_dict(), str(weights))
    loaded = load_user_model(weights, f"{nets}:TinyNet", num_classes=5)
    assert type(loaded).__name__ == "TinyNet" and not loaded.training
    x = torch.randn(4, 1, 6, 6)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_pickle_is_refused_and_never_unpickled(tmp_path, nets, how):
    marker = tmp_path / "unpickled.marker"
    payload = {"conv.weight": torch.zeros(1), "evil": _Marker(str(marker))}
    weights = tmp_path / "model.pt"
    if how == "torch.save":
        torch.save(payload, weights)
    else:
        weights.write_bytes(pickle.dumps(payload, protocol=2))
    # the payload is real: unpickling it would create the marker
    with pytest.raises(InputError) as err:
        load_user_model(weights, f"{nets}:TinyNet")
    msg = str(err.value)
    assert "safetensors" in msg and "save_file(model.state_dict()" in msg
    assert "pickle" in msg
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Marker(str(marker))))
    assert marker.exists()  # the control: the same object does create it when unpickled


def test_not_a_module_class(nets, tmp_path):
    weights = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(1)}, str(weights))
    with pytest.raises(InputError, match="NotAModel, not a torch.nn.Module subclass"):
        load_user_model(weights, f"{nets}:NotAModel")
    with pytest.raises(InputError, match="is function, not a torch.nn.Module subclass"):
        load_user_model(weights, f"{nets}:make")
    with pytest.raises(InputError, match="has no attribute 'TinyNt'; did you mean 'TinyNet'"):
        load_user_model(weights, f"{nets}:TinyNt")


def test_wrong_keys_and_shapes_are_listed(nets, tmp_path):
    state = _trained(nets).state_dict()
    state["extra.weight"] = torch.zeros(2)
    del state["head.bias"]
    weights = tmp_path / "w.safetensors"
    save_file(state, str(weights))
    with pytest.raises(InputError) as err:
        load_user_model(weights, f"{nets}:TinyNet")
    msg = str(err.value)
    assert "the file lacks head.bias" in msg and "the model has no extra.weight" in msg
    assert "\n" not in msg
    good = tmp_path / "good.safetensors"
    save_file(_trained(nets).state_dict(), str(good))
    with pytest.raises(
        InputError,
        match=r"head.weight: the file holds \(3, 4\), the model \(7, 4\)",
    ):
        load_user_model(good, f"{nets}:TinyNet", num_classes=7)


def test_bad_constructor_arguments(nets, tmp_path):
    good = tmp_path / "good.safetensors"
    save_file(_trained(nets).state_dict(), str(good))
    with pytest.raises(InputError, match=r"with depth=3 failed: TypeError: .*'depth'"):
        load_user_model(good, f"{nets}:TinyNet", depth=3)
