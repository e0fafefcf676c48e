"""Data sources in their official layouts, the face cache, the train/val split and the epoch planner."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepscan.media.synthetic import moving_portrait_clip
from deepscan.data.face_cache import ExtractionParams, FaceCache
from deepscan.data.sources import DataError, RealImagesSource, list_media
from deepscan.train.datasets import (
    collect_faces,
    extract_faces,
    list_sources,
    plan_epoch,
    split_groups,
)
from deepscan.train.recipe import DataSpec, Recipe

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def source(spec: dict, base: Path):
    """A validated source, as a recipe in ``base`` would give it."""
    recipe = Recipe.model_validate(
        {"detector": {"name": "sficonv"}, "data": {"train": [spec]}}, context={"base_dir": base}
    )
    return recipe.data.train[0]


# --- layouts -------------------------------------------------------------------------------------------------


@pytest.fixture
def ffpp_tree(tmp_path):
    root = tmp_path / "FaceForensics++"
    for compression in ("c23", "c40"):
        for video in ("000", "001", "002", "003", "004"):
            touch(root / f"original_sequences/youtube/{compression}/videos/{video}.mp4")
        for method in FFPP_METHODS:
            for pair in ("000_001", "001_000", "002_003", "003_002"):
                touch(root / f"manipulated_sequences/{method}/{compression}/videos/{pair}.mp4")
    (root / "splits").mkdir()
    (root / "splits/train.json").write_text(json.dumps([["000", "001"]]))
    (root / "splits/val.json").write_text(json.dumps([["002", "003"]]))
    (root / "splits/test.json").write_text(json.dumps([["004", "005"]]))
    return root


def test_faceforensics_finds_the_split_videos_with_their_labels(ffpp_tree):
    items = list_media(source({"kind": "faceforensics", "root": str(ffpp_tree), "split": "train"}, ffpp_tree))
    found = {(item.path.relative_to(ffpp_tree).as_posix(), item.label) for item in items}
    expected = {("original_sequences/youtube/c23/videos/000.mp4", 0), ("original_sequences/youtube/c23/videos/001.mp4", 0)}
    expected |= {
        (f"manipulated_sequences/{method}/c23/videos/{pair}.mp4", 1) for method in FFPP_METHODS for pair in ("000_001", "001_000")
    }
    assert found == expected
    assert {item.group for item in items} == {"ffpp:000_001"} and {item.kind for item in items} == {"video"}


def test_faceforensics_options_select_compression_methods_and_split(ffpp_tree):
    spec = {"kind": "faceforensics", "root": str(ffpp_tree), "split": "val", "compression": "c40",
            "manipulations": ["Face2Face"], "include_real": False}
    items = list_media(source(spec, ffpp_tree))
    assert sorted(item.path.name for item in items) == ["002_003.mp4", "003_002.mp4"]
    assert all("/Face2Face/c40/" in item.path.as_posix() and item.label == 1 for item in items)
    # The test split names a pair whose videos are partly missing: what exists is found, nothing else.
    test_items = list_media(source({"kind": "faceforensics", "root": str(ffpp_tree), "split": "test"}, ffpp_tree))
    assert [item.path.name for item in test_items] == ["004.mp4"]


def test_faceforensics_errors_name_the_missing_piece(ffpp_tree, tmp_path):
    (ffpp_tree / "splits/train.json").unlink()
    with pytest.raises(DataError, match="train.json: FaceForensics\\+\\+ split file not found"):
        list_media(source({"kind": "faceforensics", "root": str(ffpp_tree)}, ffpp_tree))
    with pytest.raises(DataError, match="FaceForensics\\+\\+ root not found"):
        list_media(source({"kind": "faceforensics", "root": str(tmp_path / "nowhere")}, tmp_path))


def test_celebdf_splits_on_its_test_list_and_labels_by_folder(tmp_path):
    root = tmp_path / "Celeb-DF-v2"
    for name in ("Celeb-real/id0_0000.mp4", "Celeb-real/id0_0001.mp4", "Celeb-synthesis/id0_id1_0000.mp4",
                 "Celeb-synthesis/id0_id1_0001.mp4", "YouTube-real/00000.mp4"):
        touch(root / name)
    # Celeb-DF's own flag is 1 for real: the labels must come from the folders.
    (root / "List_of_testing_videos.txt").write_text("1 Celeb-real/id0_0001.mp4\n0 Celeb-synthesis/id0_id1_0001.mp4\n")
    test = list_media(source({"kind": "celebdf", "root": str(root), "split": "test"}, root))
    assert sorted((item.path.name, item.label) for item in test) == [("id0_0001.mp4", 0), ("id0_id1_0001.mp4", 1)]
    train = list_media(source({"kind": "celebdf", "root": str(root)}, root))
    assert sorted((item.path.name, item.label) for item in train) == [
        ("00000.mp4", 0), ("id0_0000.mp4", 0), ("id0_id1_0000.mp4", 1)]
    # A fake and the real video it was made from share a group, so they never straddle the split.
    groups = {item.path.name: item.group for item in train}
    assert groups["id0_0000.mp4"] == groups["id0_id1_0000.mp4"] != groups["00000.mp4"]


def test_video_csv_reads_labels_splits_and_groups(tmp_path):
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        touch(tmp_path / "clips" / name)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label,split,group\nclips/a.mp4,real,train,p1\nclips/b.mp4,1,train,p1\nclips/c.mp4,fake,val,\n")
    train = list_media(source({"kind": "video_csv", "csv": "labels.csv", "split": "train"}, tmp_path))
    assert [(item.path.name, item.label, item.group) for item in train] == [("a.mp4", 0, "csv:p1"), ("b.mp4", 1, "csv:p1")]
    csv_path.write_text("path,label\nclips/a.mp4,maybe\n")
    with pytest.raises(DataError, match=r"labels.csv:2: label must be 0, 1, real or fake"):
        list_media(source({"kind": "video_csv", "csv": "labels.csv"}, tmp_path))


def test_video_csv_keeps_only_the_labels_asked_for(tmp_path):
    """``labels: [real]`` keeps a source's real faces alone, e.g. to train on its reals and their SBI fakes only."""
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        touch(tmp_path / name)
    (tmp_path / "labels.csv").write_text("path,label,split\na.mp4,real,train\nb.mp4,fake,train\nc.mp4,real,val\n")
    spec = {"kind": "video_csv", "csv": "labels.csv", "split": "train"}
    reals = list_media(source({**spec, "labels": ["real"]}, tmp_path))
    fakes = list_media(source({**spec, "labels": ["fake"]}, tmp_path))
    both = list_media(source({**spec, "labels": ["real", "fake"]}, tmp_path))
    assert [(item.path.name, item.label) for item in reals] == [("a.mp4", 0)]
    assert [(item.path.name, item.label) for item in fakes] == [("b.mp4", 1)]
    assert [item.path.name for item in both] == ["a.mp4", "b.mp4"]
    with pytest.raises(DataError, match="no rows with split 'val' and label fake"):
        list_media(source({**spec, "split": "val", "labels": ["fake"]}, tmp_path))


def test_frames_stored_as_files_belong_to_the_video_their_csv_names(tmp_path):
    """A side-by-side demo cut into frame files: each half's frames are one video, and the halves are two."""
    for name in ("real/v1/f0.jpg", "real/v1/f1.jpg", "fake/v1/f0.jpg", "fake/v1/f1.jpg", "real/other.jpg"):
        touch(tmp_path / name)
    (tmp_path / "labels.csv").write_text("path,label,video\nreal/v1/f0.jpg,real,v1\nreal/v1/f1.jpg,real,v1\n"
                                         "fake/v1/f0.jpg,fake,v1\nfake/v1/f1.jpg,fake,v1\nreal/other.jpg,real,\n")
    videos = [item.video for item in list_media(source({"kind": "video_csv", "csv": "labels.csv"}, tmp_path))]
    assert videos[0] == videos[1] != videos[2] == videos[3]
    assert videos[4] is None  # no video named: the file is its own


def test_the_protocol_names_the_video_of_each_deepfacelive_frame(tmp_path):
    from deepscan.train.protocol import write_splits

    folder = tmp_path / "shared" / "deepfacelive_demos"
    rows = ["file,label,video,frame_index"]
    for label in ("real", "fake"):
        for frame in range(3):
            touch(folder / label / "clip" / f"{frame}.jpg")
            rows.append(f"{label}/clip/{frame}.jpg,{label},clip,{frame}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    write_splits(tmp_path / "shared", tmp_path / "splits")
    items = list_media(source({"kind": "video_csv", "csv": "splits/deepfacelive_demos.csv"}, tmp_path))
    assert len({item.group for item in items}) == 1  # one group: both halves on one side of the split
    assert len({item.video for item in items}) == 2 and None not in {item.video for item in items}


def test_labels_csv_with_other_column_names_and_precropped_images(tmp_path):
    """The shared data's labels.csv: ``file`` instead of ``path``, the group in ``video``; images already crops."""
    for name in ("real/v1/f0.jpg", "fake/v1/f0.jpg", "real/v2/f0.jpg"):
        touch(tmp_path / name)
    (tmp_path / "labels.csv").write_text(
        "file,label,video\nreal/v1/f0.jpg,real,v1\nfake/v1/f0.jpg,fake,v1\nreal/v2/f0.jpg,real,\n"
    )
    spec = {"kind": "video_csv", "csv": "labels.csv", "path_column": "file", "group_column": "video", "crop_faces": False}
    items = list_media(source(spec, tmp_path))
    assert [(item.label, item.group, item.crop_faces) for item in items] == [
        (0, "csv:v1", False), (1, "csv:v1", False), (0, "csv:real/v2/f0.jpg", False)
    ]
    with pytest.raises(DataError, match="needs 'path' and 'label' columns"):
        list_media(source({"kind": "video_csv", "csv": "labels.csv"}, tmp_path))


def test_protocol_splits_whole_groups_stably_and_in_the_stated_shares(tmp_path):
    from deepscan.train.protocol import SourceRole, write_splits

    role = SourceRole(train=0.75, val=0.10, test=0.15)
    splits = [role.split_of("dfdc_faces", f"group{index}") for index in range(4000)]
    assert splits == [role.split_of("dfdc_faces", f"group{index}") for index in range(4000)]
    shares = {part: splits.count(part) / len(splits) for part in ("train", "val", "test")}
    assert shares == pytest.approx({"train": 0.75, "val": 0.10, "test": 0.15}, abs=0.03)
    # A real video and its fakes share a group, so they always land on the same side.
    source = tmp_path / "shared" / "dfdc_faces"
    rows = ["file,label,group"]
    for index in range(60):
        for label in ("real", "fake"):
            touch(source / label / f"{index}.jpg")
            rows.append(f"{label}/{index}.jpg,{label},g{index}")
    (source / "labels.csv").write_text("\n".join(rows) + "\n")
    counts = write_splits(tmp_path / "shared", tmp_path / "splits")
    written = (tmp_path / "splits" / "dfdc_faces.csv").read_text().splitlines()[1:]
    by_group: dict[str, set[str]] = {}
    for line in written:
        path, label, group, split, video = line.split(",")
        assert video == ""  # DFDC crops are one file per video
        assert Path(path).is_absolute() and Path(path).is_file()
        by_group.setdefault(group, set()).add(split)
    assert all(len(parts) == 1 for parts in by_group.values()) and len(by_group) == 60
    assert sum(counts["dfdc_faces"].values()) == 120


def test_folder_labels_come_from_the_nearest_real_or_fake_folder(tmp_path):
    for name in ("set1/real/0001.png", "set1/fake/0001.png", "set1/fake/deep/er/x/0002.jpg", "set2/REAL/v/clip.mp4",
                 "set2/real/notes.txt", "unlabelled/0003.png"):
        touch(tmp_path / "data" / name)
    items = list_media(source({"kind": "folder", "path": "data"}, tmp_path))
    found = {item.path.relative_to(tmp_path / "data").as_posix(): (item.label, item.kind) for item in items}
    assert found == {
        "set1/real/0001.png": (0, "image"),
        "set1/fake/0001.png": (1, "image"),
        "set1/fake/deep/er/x/0002.jpg": (1, "image"),
        "set2/REAL/v/clip.mp4": (0, "video"),
    }
    groups = {item.path.name: item.group for item in items}
    assert groups["0001.png"] == "set1:0001"  # real/0001 and fake/0001 (made from it) stay together
    with pytest.raises(DataError, match="no image or video under a real/ or fake/ folder"):
        list_media(source({"kind": "folder", "path": "data/unlabelled"}, tmp_path))


# --- the face cache ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def media_folder(tmp_path_factory, portrait_image):
    folder = tmp_path_factory.mktemp("media")
    photos = folder / "photos"
    photos.mkdir()
    Image.fromarray(portrait_image).resize((240, 205)).save(photos / "hopper.png")
    Image.fromarray(portrait_image[:, ::-1]).resize((240, 205)).save(photos / "mirrored.jpg", quality=95)
    (photos / "copy-of-hopper.png").write_bytes((photos / "hopper.png").read_bytes())
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    Image.new("RGB", (120, 90), (30, 120, 200)).save(photos / "sky.png")
    videos = folder / "videos"
    videos.mkdir()
    moving_portrait_clip(videos / "talk.mp4", seconds=1.0, fps=10, size=(240, 180))
    return folder


def test_faces_are_extracted_once_and_reused(media_folder, tmp_path):
    spec = DataSpec.model_validate({
        "train": [{"kind": "real_images", "path": str(media_folder / "photos")},
                  {"kind": "real_videos", "path": str(media_folder / "videos")}],
        "face": {"frames_per_video": 3},
    })
    cache = FaceCache(tmp_path / "cache")

    def params_for(item):
        return ExtractionParams(frames_per_video=3, cache_size=96, crop_faces=True)

    listed = list_sources(spec)
    first = extract_faces(listed, params_for, cache)
    # The copy of hopper.png has the same content, so the cache already holds it: keyed by content, not name.
    assert first["extracted"] == 4 and first["reused"] == 1 and first["failed"] == 1
    assert first["faceless"] == 1  # the sky
    second = extract_faces(listed, params_for, cache)
    assert second["reused"] == 5 and second["extracted"] == 0 and second["faces"] == first["faces"]
    # Other parameters are another cache entry.
    third = extract_faces(listed, lambda item: ExtractionParams(frames_per_video=2, cache_size=96), cache)
    assert third["extracted"] == 4 and third["reused"] == 1

    prepared = collect_faces(listed, spec, params_for, cache, seed=0)
    faces = prepared.train_faces + prepared.val_faces
    photos, videos = prepared.summaries["train"]
    assert photos.duplicates == 1 and photos.failed == 1 and photos.faceless == 1
    assert photos.real_faces == 2 and videos.real_faces == 3
    for face in faces:
        with Image.open(face.image) as crop:
            assert crop.size == (96, 96)
        assert face.label == 0
        # BlazeFace's keypoints fall inside the face box, the central 1 / 1.8 of the cached crop.
        assert (np.abs(face.keypoints[:4] - 48) < 48 / 1.8 + 2).all()


def test_precropped_faces_keep_their_framing(media_folder, tmp_path):
    cache = FaceCache(tmp_path / "cache")
    params = ExtractionParams(cache_size=96, crop_faces=False)
    faces, cached = cache.faces_for(media_folder / "photos" / "sky.png", "image", params, lambda: _NoFaces())
    assert not cached and len(faces) == 1 and np.isnan(faces[0].keypoints).all()
    faces, cached = cache.faces_for(media_folder / "photos" / "sky.png", "image", params, lambda: _NoFaces())
    assert cached


class _NoFaces:
    def detect(self, image):
        return []


# --- splitting and epochs ------------------------------------------------------------------------------------


def test_split_holds_out_whole_groups_stably():
    groups = [f"video{i // 3}" for i in range(60)]  # 20 groups of 3 faces
    held = split_groups(groups, 0.2, seed=5)
    assert len(held) == 4 and held == split_groups(groups, 0.2, seed=5)
    assert held != split_groups(groups, 0.2, seed=6)
    assert split_groups(["only"], 0.5, seed=0) == set() and split_groups(groups, 0.0, seed=0) == set()


def test_epoch_plans_are_reproducible_balanced_and_weighted():
    labels = [0] * 30 + [1] * 10
    uniform = [1.0] * 40
    first = plan_epoch(labels, uniform, 8, epoch=2, seed=1, balanced=False)
    assert first.batches == plan_epoch(labels, uniform, 8, epoch=2, seed=1, balanced=False).batches
    assert first.batches != plan_epoch(labels, uniform, 8, epoch=3, seed=1, balanced=False).batches
    assert len(first) == 5 and sorted(e for batch in first.batches for e, _ in batch) == list(range(40))
    seeds = [s for batch in first.batches for _, s in batch]
    assert len(set(seeds)) == len(seeds)

    balanced = plan_epoch(labels, uniform, 8, epoch=0, seed=1, balanced=True, num_batches=6)
    for batch in balanced.batches:
        assert sum(labels[e] for e, _ in batch) == 4

    # A source weighted 4x supplies about 4x its natural share.
    weights = [4.0] * 10 + [1.0] * 30
    drawn = [e for batch in plan_epoch([0] * 40, weights, 10, 0, 1, False, num_batches=200).batches for e, _ in batch]
    share = np.mean(np.array(drawn) < 10)
    assert share == pytest.approx(40 / 70, abs=0.04)


def test_real_only_folder_without_faces_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image found"):
        list_media(RealImagesSource(kind="real_images", path=tmp_path / "empty"))


def test_protocol_refuses_a_file_without_its_group(tmp_path):
    from deepscan.train.protocol import write_splits

    source = tmp_path / "shared" / "dfdc_faces"
    touch(source / "fake" / "a.jpg")
    (source / "labels.csv").write_text("file,label,group\nfake/a.jpg,fake,\n")
    with pytest.raises(ValueError, match="labels.csv:2: no 'group' for fake/a.jpg"):
        write_splits(tmp_path / "shared", tmp_path / "splits")
