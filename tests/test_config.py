"""YAML/flag configuration: unknown keys and bad values name the key and what is allowed."""

from __future__ import annotations

import pytest

from trustlab.config import TrainConfig, load_train_config, parse_config
from trustlab.errors import InputError


def test_defaults_and_overrides(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("dataset: digits\nmodel: cnn-small\nepochs: 3\nlr: 0.05\n")
    cfg = load_train_config(f, epochs=7, lr=None)
    assert isinstance(cfg, TrainConfig)
    assert (cfg.dataset, cfg.model, cfg.epochs, cfg.lr) == ("digits", "cnn-small", 7, 0.05)


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"epoch": 3}, r"config key 'epoch': unknown key \(did you mean 'epochs'\?\)"),
        ({"epochs": -2}, r"config key 'epochs': .*greater than or equal to 1 \(got -2\)"),
        ({"optimizer": "rmsprop"}, r"'optimizer': .*'sgd', 'adam' or 'adamw'"),
        ({"dataset": "cifar11"}, r"config key 'dataset': unknown dataset 'cifar11'.*Available"),
        ({"model": "resnet21"}, r"config key 'model': unknown model 'resnet21'.*resnet20"),
        ({"device": "tpu"}, r"'device'"),
        ({"augment": "rotate"}, r"'augment'.*crop-flip"),
    ],
)
def test_errors_name_key_and_allowed(data: dict, pattern: str) -> None:
    with pytest.raises(InputError, match=pattern):
        parse_config(TrainConfig, data)


def test_yaml_file_errors(tmp_path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_train_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_train_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="mapping"):
        load_train_config(lst)
    obj = tmp_path / "obj.yaml"
    obj.write_text("epochs: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(InputError):
        load_train_config(obj)


def test_cross_key_errors_name_the_keys() -> None:
    with pytest.raises(InputError, match=r"^config: 'nesterov' applies to optimizer 'sgd'"):
        parse_config(TrainConfig, {"nesterov": True, "optimizer": "adam"})
    with pytest.raises(InputError, match="'warmup_epochs' must be < 'epochs'"):
        parse_config(TrainConfig, {"epochs": 2, "warmup_epochs": 2})
