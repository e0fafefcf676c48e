"""The data protocol of deepscan's shipped weights: which face source trains, which validates, which is held out.

    python -m deepscan.train.protocol ../shared/data local/splits [--guide local/demo-data]

writes one CSV per source (``path,label,group,split,video``; absolute paths; ``video`` names the video of a frame
stored as a file, empty otherwise) that the recipes in ``recipes/shipped/``
train on and that ``deepscan evaluate`` reads (it takes the ``test`` rows of a CSV with a ``split`` column).
The files themselves stay where they are: the CSVs only point at them, in a git-ignored folder.

Rules, fixed before any training and recorded in every model card:
- split by group, never by file: a DFDC fake and its original video share a group; a DeepFaceLive demo video
  is one group; a photo is its own group. A group's split is decided by the sha256 of ``SEED:source:group``,
  so the split is stable, reproducible and blind to the labels;
- in-domain: DFDC groups are split train / val / test (75 / 10 / 15 %). Checkpoints and calibration are chosen
  on val; test is looked at once, for the model card;
- cross-source: whole sources never trained on, at any stage: the DeepFaceLive live swaps, the Photoshop
  part-swaps (CIPLAB), the StyleGAN2 faces and their Unsplash reals;
- false alarms: real faces never trained on: 30 % of FairFace (by photo), the CelebA in-the-wild photos and
  their two videos, and the guide's talking-head videos.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from deepscan.media.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

SEED = "deepscan-protocol-1"


@dataclass(frozen=True)
class SourceRole:
    """Shares of a source's groups that go to train, val and test (they sum to 1)."""

    train: float = 0.0
    val: float = 0.0
    test: float = 0.0
    group_column: str | None = None  # None: each file is its own group
    video_column: str | None = None  # frames stored as files: the labels.csv column naming their video

    def split_of(self, source: str, group: str) -> str:
        digest = hashlib.sha256(f"{SEED}:{source}:{group}".encode()).digest()
        position = int.from_bytes(digest[:8], "big") / 2**64
        if position < self.train:
            return "train"
        return "val" if position < self.train + self.val else "test"


# The shared data (see its SOURCES.md).
SHARED_ROLES = {
    "dfdc_faces": SourceRole(train=0.75, val=0.10, test=0.15, group_column="group"),
    "fairface_subset": SourceRole(train=0.60, val=0.10, test=0.30),
    "celebahq_stargan2_samples": SourceRole(train=1.0),
    "liveportrait_driving": SourceRole(train=1.0),
    "deepfacelive_samples": SourceRole(test=1.0),
    "deepfacelive_demos": SourceRole(test=1.0, group_column="video", video_column="video"),
    "ciplab_real_fake_160": SourceRole(test=1.0),
    "hardfakevsreal_stylegan2": SourceRole(test=1.0),
}
# The guide's registry faces (python -m deepscan.train.demo_data local): photos train, talking heads are held out.
GUIDE_ROLES = {
    "nba": SourceRole(train=1.0),
    "photos": SourceRole(train=1.0),
    "videos": SourceRole(test=1.0),
    "carphone": SourceRole(test=1.0),
}


def _write(rows: list[dict], path: Path) -> dict[str, int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "group", "split", "video"], restval="")
        writer.writeheader()
        writer.writerows(rows)
    counts: dict[str, int] = {}
    for row in rows:
        key = f"{row['split']}_{row['label']}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def shared_source_rows(folder: Path, role: SourceRole) -> list[dict]:
    with open(folder / "labels.csv", newline="") as handle:
        listed = list(csv.DictReader(handle))
    rows = []
    for number, row in enumerate(listed, start=2):
        group = (row.get(role.group_column) or "").strip() if role.group_column else row["file"]
        if not group:  # a file without its group could land on the other side of the split from its original
            raise ValueError(f"{folder / 'labels.csv'}:{number}: no {role.group_column!r} for {row['file']}")
        rows.append(
            {
                "path": str((folder / row["file"]).resolve()),
                "label": row["label"].strip().lower(),
                "group": group,
                "split": role.split_of(folder.name, group),
                "video": (row.get(role.video_column) or "").strip() if role.video_column else "",
            }
        )
    return rows


def guide_rows(folder: Path, role: SourceRole) -> list[dict]:
    extensions = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
    rows = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions):
        relative = path.relative_to(folder)
        group = relative.parts[0] if len(relative.parts) > 1 and folder.name in ("nba", "photos") else relative.stem
        rows.append({"path": str(path.resolve()), "label": "real", "group": group, "split": role.split_of(f"guide-{folder.name}", group)})
    return rows


def describe() -> dict:
    """The protocol as a model card records it: the seed, each source's shares and what is never trained on."""
    roles = {**SHARED_ROLES, **{f"guide_{name}": role for name, role in GUIDE_ROLES.items()}}
    return {
        "module": __name__,
        "seed": SEED,
        "shares": {name: {"train": r.train, "val": r.val, "test": r.test, "group": r.group_column or "file"} for name, r in roles.items()},
        "never_trained_on": [name for name, r in roles.items() if r.train == 0 and r.val == 0],
        "partly_held_out": [name for name, r in roles.items() if r.test > 0 and (r.train > 0 or r.val > 0)],
    }


def write_splits(shared: Path, out: Path, guide: Path | None = None) -> dict[str, dict[str, int]]:
    """One CSV per source under ``out``; returns the counts per source and split_label."""
    counts = {}
    for name, role in SHARED_ROLES.items():
        if (shared / name / "labels.csv").is_file():
            counts[name] = _write(shared_source_rows(shared / name, role), out / f"{name}.csv")
    if guide is not None:
        for name, role in GUIDE_ROLES.items():
            if (guide / name).is_dir():
                counts[f"guide_{name}"] = _write(guide_rows(guide / name, role), out / f"guide_{name}.csv")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shared", type=Path, help="the shared data folder (one sub-folder per source, each with labels.csv)")
    parser.add_argument("out", type=Path, help="folder for the split CSVs (keep it git-ignored)")
    parser.add_argument("--guide", type=Path, default=None, help="the demo-data folder of python -m deepscan.train.demo_data")
    args = parser.parse_args()
    for name, split_counts in write_splits(args.shared, args.out, args.guide).items():
        print(name, " ".join(f"{key}={value}" for key, value in sorted(split_counts.items())))


if __name__ == "__main__":
    main()
