"""The package as pip builds it: every sub-package listed, data files shipped, assets verified."""

import tomllib
from pathlib import Path

import deepscan

ROOT = Path(deepscan.__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "deepscan").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"


def test_face_model_and_licence_ship_with_the_package():
    from deepscan.media.faces import load_model_bytes

    assets = ROOT / "deepscan" / "assets"
    assert (assets / "LICENSE-mediapipe.txt").read_text().count("Apache") >= 1
    assert len(load_model_bytes()) == 229_714  # verified against its sha256 on load
