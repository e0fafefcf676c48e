"""Weights split into safetensors shards with an index: written within the limit, read back bit for bit by the one
weights loader, and refused when a shard is missing, altered, or named outside the index's folder."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from deepscan.detectors import create_detector
from deepscan.weights.shards import INDEX_SUFFIX, index_path_for, main, read_index
from deepscan.weights import (
    IntegrityError,
    ResolvedWeights,
    WeightsError,
    build_detector,
    load_weights,
    resolve_weights,
    save_weights,
    weights_metadata,
)

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return create_detector("pel", backbone="mobilenetv2_100")


@pytest.fixture(scope="module")
def limit_mib(detector) -> float:
    """A shard limit that splits the detector into several shards yet holds its largest tensor."""
    largest = max(t.numel() * t.element_size() for t in detector.state_dict().values())
    return round(2.5 * largest / MIB, 2)


@pytest.fixture
def sharded(tmp_path, detector, limit_mib):
    metadata = {"input_size": "96", "detector_kwargs": json.dumps({"backbone": "mobilenetv2_100"})}
    save_weights(detector, tmp_path / "pel.safetensors", metadata, max_shard_mib=limit_mib)
    return tmp_path / f"pel{INDEX_SUFFIX}"


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_round_trip_is_bit_exact_and_every_shard_within_the_limit(sharded, detector, limit_mib):
    index = read_index(sharded)
    assert len(index.shards) >= 3
    for shard in index.shards:
        assert (sharded.parent / shard.file).stat().st_size <= limit_mib * MIB
    assert not (sharded.parent / "pel.safetensors").exists()  # the shards replace the single file
    other = create_detector("pel", backbone="mobilenetv2_100")
    resolved = resolve_weights(None, sharded)
    load_weights(other, resolved)
    ours, theirs = detector.state_dict(), other.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


def test_half_precision_shards_load_into_the_float32_detector(tmp_path, detector, limit_mib):
    save_weights(detector, tmp_path / "pel.safetensors", max_shard_mib=limit_mib, half=True)
    other = create_detector("pel", backbone="mobilenetv2_100")
    load_weights(other, resolve_weights(None, index_path_for(tmp_path / "pel.safetensors")))
    weight = "streams.rgb.stem.0.weight"
    assert other.state_dict()[weight].dtype == torch.float32
    assert torch.equal(other.state_dict()[weight], detector.state_dict()[weight].half().float())


def test_metadata_and_build_settings_come_from_the_index(sharded):
    resolved = resolve_weights(None, sharded)
    metadata = weights_metadata(resolved)
    assert metadata["detector"] == "pel" and metadata["input_size"] == "96"
    assert read_index(sharded).metadata == metadata
    built, _ = build_detector("pel", sharded)  # architecture and input size from the index's metadata
    assert built.config.input_size == 96 and built.config.name == "pel"


def test_a_shard_over_the_limit_is_never_written(tmp_path, detector):
    largest = max(t.numel() * t.element_size() for t in detector.state_dict().values())
    with pytest.raises(WeightsError, match="over the shard limit") as error:
        save_weights(detector, tmp_path / "pel.safetensors", max_shard_mib=0.5 * largest / MIB)
    _one_line(error)
    assert list(tmp_path.iterdir()) == []


def test_an_altered_shard_is_refused(sharded):
    shard = sharded.parent / read_index(sharded).shards[1].file
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    shard.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="fails its sha256 check") as error:
        resolve_weights(None, sharded)
    _one_line(error)
    with pytest.raises(IntegrityError, match="fails its sha256 check"):  # loading checks again, whoever resolved
        load_weights(create_detector("pel", backbone="mobilenetv2_100"), ResolvedWeights(sharded, "file", None))


def test_a_missing_shard_is_refused(sharded):
    (sharded.parent / read_index(sharded).shards[0].file).unlink()
    with pytest.raises(WeightsError, match="is missing") as error:
        resolve_weights(None, sharded)
    _one_line(error)


@pytest.mark.parametrize("name", ["../outside.safetensors", "/tmp/outside.safetensors", "sub/inner.safetensors",
                                  "..", "pel.pt"])
def test_an_index_naming_a_shard_outside_its_folder_is_refused(sharded, name):
    index = json.loads(sharded.read_text())
    old = index["shards"][0]["file"]
    index["shards"][0]["file"] = name
    index["weight_map"] = {tensor: name if shard == old else shard for tensor, shard in index["weight_map"].items()}
    sharded.write_text(json.dumps(index))
    with pytest.raises(WeightsError, match="refused") as error:
        resolve_weights(None, sharded)
    _one_line(error)


def test_a_shard_linked_to_a_file_outside_the_folder_is_refused(tmp_path, detector, limit_mib):
    inside = tmp_path / "set"
    inside.mkdir()
    save_weights(detector, inside / "pel.safetensors", max_shard_mib=limit_mib)
    index = inside / f"pel{INDEX_SUFFIX}"
    shard = inside / read_index(index).shards[0].file
    outside = tmp_path / "elsewhere.safetensors"
    shard.rename(outside)
    shard.symlink_to(outside)  # same bytes, but read from outside the folder
    with pytest.raises(WeightsError, match="leads outside the index's folder"):
        resolve_weights(None, index)


def test_a_shard_holding_other_tensors_than_mapped_is_refused(sharded):
    index = json.loads(sharded.read_text())
    tensor = next(iter(index["weight_map"]))
    index["weight_map"][tensor] = index["shards"][-1]["file"]  # mapped to a shard that does not hold it
    sharded.write_text(json.dumps(index))
    with pytest.raises(WeightsError, match="holds other tensors than the index maps to it"):
        load_weights(create_detector("pel", backbone="mobilenetv2_100"), resolve_weights(None, sharded))


def test_a_card_beside_the_index_pins_the_whole_set(sharded):
    from deepscan.runtime import sha256_file

    card = {"schema": "deepscan.model-card", "detector": {"name": "pel", "input_size": 96},
            "weights": {"file": sharded.name, "sha256": sha256_file(sharded)}}
    (sharded.parent / "pel.card.json").write_text(json.dumps(card))
    resolved = resolve_weights(None, sharded)
    assert resolved.card is not None and resolved.sha256 == sha256_file(sharded)
    card["weights"]["sha256"] = "0" * 64
    (sharded.parent / "pel.card.json").write_text(json.dumps(card))
    with pytest.raises(IntegrityError, match="differs from its model card"):
        resolve_weights(None, sharded)


def test_the_single_file_form_is_unchanged(tmp_path, detector):
    path = tmp_path / "pel.safetensors"
    digest = save_weights(detector, path, {"input_size": "96"})
    assert [p.name for p in tmp_path.iterdir()] == ["pel.safetensors"]  # one plain file, no index
    stored = load_file(str(path))
    assert stored.keys() == detector.state_dict().keys()
    assert all(torch.equal(stored[name], tensor) for name, tensor in detector.state_dict().items())
    resolved = resolve_weights(None, path)
    assert resolved.sha256 == digest
    assert weights_metadata(resolved) == {"detector": "pel", "input_size": "96"}


def test_shipped_weights_may_ship_as_a_shard_index(shipped):
    detector = create_detector("tiny_a")
    save_weights(detector, shipped.folder / "tiny_a.safetensors", max_shard_mib=1)
    shipped.seal()
    resolved = resolve_weights("tiny_a.safetensors")
    assert resolved.source == "shipped" and resolved.path.name == f"tiny_a{INDEX_SUFFIX}"
    index = resolved.path
    index.write_text(index.read_text().replace('"version": 1', '"version":  1'))  # same meaning, other bytes
    with pytest.raises(IntegrityError, match="SHA256SUMS"):
        resolve_weights("tiny_a.safetensors")


def test_split_and_join_on_the_command_line(tmp_path, detector, limit_mib, capsys):
    single = tmp_path / "pel.safetensors"
    save_weights(detector, single)
    index = tmp_path / "out" / f"pel{INDEX_SUFFIX}"
    index.parent.mkdir()
    assert main(["split", str(single), str(index), "--max-mib", str(limit_mib), "--fp16"]) == 0
    joined = tmp_path / "joined.safetensors"
    assert main(["join", str(index), str(joined)]) == 0
    other = create_detector("pel", backbone="mobilenetv2_100")
    load_weights(other, resolve_weights(None, joined))
    weight = "frequency_input.band_conv.weight"
    assert torch.equal(other.state_dict()[weight], detector.state_dict()[weight].half().float())
    assert main(["split", str(tmp_path / "absent.safetensors"), str(index)]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err
