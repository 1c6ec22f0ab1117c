"""load_object: 'pkg.module:Name' and 'path/to/file.py:Name' specs, and their error messages."""

from __future__ import annotations

import collections
import sys
import textwrap
from pathlib import Path

import pytest

from trustlab.errors import InputError
from trustlab.utils.imports import load_object


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_module_spec_and_dotted_name():
    assert load_object("collections:OrderedDict", what="class") is collections.OrderedDict
    assert load_object("os:path.join", what="function") is __import__("os").path.join


def test_file_spec_loads_without_sys_path_changes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "pkg" / "helpers.py", "SCALE = 3\n")
    write(
        tmp_path / "pkg" / "nets.py",
        """
        import dataclasses
        from .helpers import SCALE  # a module beside the file, imported relatively

        class Zoo:
            class Small:
                scale = SCALE

        @dataclasses.dataclass
        class Config:
            width: int = 2
        """,
    )
    before = list(sys.path)
    small = load_object("pkg/nets.py:Zoo.Small", what="model class")
    assert small.scale == 3
    assert load_object(str(tmp_path / "pkg" / "nets.py") + ":Config", what="x")().width == 2
    assert sys.path == before  # loading never touches sys.path
    assert small.__module__.startswith("trustlab_user_")


def test_two_files_with_the_same_name_do_not_collide(tmp_path):
    a = write(tmp_path / "a" / "model.py", "VALUE = 'a'\n")
    b = write(tmp_path / "b" / "model.py", "VALUE = 'b'\n")
    assert load_object(f"{a}:VALUE", what="v") == "a"
    assert load_object(f"{b}:VALUE", what="v") == "b"


@pytest.mark.parametrize("spec", ["collections.OrderedDict", "", "mod:", ":Name", "m:1x"])
def test_malformed_spec(spec):
    with pytest.raises(InputError, match="'pkg.module:Name' or 'path/to/file.py:Name'"):
        load_object(spec, what="model class")


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"model class .*nope\.py does not exist.*Check the path"):
        load_object(f"{tmp_path}/nope.py:Net", what="model class")
    with pytest.raises(InputError, match=r"not a \.py file"):
        load_object(f"{tmp_path}/nets:Net", what="model class")


def test_missing_module_suggests_the_local_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="no module named 'no_such_mod_xyz'.*PYTHONPATH"):
        load_object("no_such_mod_xyz:Net", what="model class")
    write(tmp_path / "mynets_xyz.py", "class Net: pass\n")
    with pytest.raises(InputError, match=r"pass it as 'mynets_xyz\.py:Net'"):
        load_object("mynets_xyz:Net", what="model class")


def test_import_error_inside_the_file_in_one_line(tmp_path):
    bad = write(tmp_path / "bad.py", "x = 1\nimport not_installed_pkg_xyz\n")
    with pytest.raises(InputError) as err:
        load_object(f"{bad}:Net", what="model class")
    msg = str(err.value)
    assert "\n" not in msg
    assert "ModuleNotFoundError: No module named 'not_installed_pkg_xyz'" in msg
    assert "bad.py:2" in msg
    assert not [m for m in sys.modules if m.startswith("trustlab_user_") and m.endswith("_bad")]


def test_exception_and_syntax_error_in_the_file(tmp_path):
    boom = write(tmp_path / "boom.py", "raise RuntimeError('no GPU\\nhere')\n")
    with pytest.raises(InputError, match=r"boom\.py:1 with RuntimeError: no GPU here\."):
        load_object(f"{boom}:Net", what="model class")
    syn = write(tmp_path / "syn.py", "def f(:\n")
    with pytest.raises(InputError, match=r"SyntaxError: .*line 1"):
        load_object(f"{syn}:f", what="function")


def test_missing_attribute_names_close_ones(tmp_path):
    nets = write(tmp_path / "nets.py", "class SmallNet: pass\nclass BigNet: pass\n")
    with pytest.raises(InputError, match=r"has no attribute 'SmalNet'; did you mean 'SmallNet'"):
        load_object(f"{nets}:SmalNet", what="model class")
    with pytest.raises(InputError, match=r"SmallNet has no attribute 'Inner'"):
        load_object(f"{nets}:SmallNet.Inner", what="model class")
    with pytest.raises(InputError, match=r"collections has no attribute 'Zzzzz'"):
        load_object("collections:Zzzzz", what="class")
