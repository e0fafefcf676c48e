import hashlib
import json

import pytest
import torch

from deepscan.detectors import create_detector
from deepscan.weights import WeightsError, load_weights, resolve_weights, save_weights, shipped_checksums


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return create_detector("faclue", use_local=False)


def test_no_spec_and_nothing_shipped_means_untrained():
    resolved = resolve_weights("does-not-ship.safetensors")
    assert not resolved.trained and resolved.source == "none"


def test_round_trip_through_safetensors(tmp_path, detector):
    path = tmp_path / "w.safetensors"
    digest = save_weights(detector, path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    other = create_detector("faclue", use_local=False)
    resolved = resolve_weights(None, path)
    assert resolved.trained and resolved.sha256 == digest
    load_weights(other, resolved)
    for (name, a), (_, b) in zip(detector.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), name


def test_weights_for_another_architecture_are_refused(tmp_path, detector):
    path = tmp_path / "w.safetensors"
    save_weights(detector, path)  # saved without the local FA branch
    with pytest.raises(WeightsError, match="does not fit"):
        load_weights(create_detector("faclue"), resolve_weights(None, path))


@pytest.mark.parametrize("name, content, message", [
    ("w.pt", b"\x80\x04pickle", "only .safetensors"),
    ("w.safetensors", b"garbage", "not a readable safetensors"),
])
def test_unsafe_or_broken_files_are_refused(tmp_path, detector, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=message):
        load_weights(detector, resolve_weights(None, path))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights(None, tmp_path / "nope.safetensors")


def test_hub_spec_reads_the_local_cache_offline(tmp_path, monkeypatch, detector):
    # Build a Hugging Face cache by hand, as a previous online download would have left it.
    cache = tmp_path / "hub"
    snapshot = cache / "models--lab--detector" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    save_weights(detector, snapshot / "faclue.safetensors")
    (cache / "models--lab--detector" / "refs").mkdir()
    (cache / "models--lab--detector" / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    resolved = resolve_weights(None, "hf://lab/detector/faclue.safetensors")
    assert resolved.source == "hub" and resolved.path.name == "faclue.safetensors"
    with pytest.raises(WeightsError, match="offline"):
        resolve_weights(None, "hf://lab/missing/faclue.safetensors")


def test_shipped_checksums_parse_sha256sum_format(tmp_path):
    (tmp_path / "SHA256SUMS").write_text("ab12  a.safetensors\ncd34 *b.safetensors\n")
    assert shipped_checksums(tmp_path) == {"a.safetensors": "ab12", "b.safetensors": "cd34"}


def test_training_only_modules_stay_out_of_shipped_weights_and_the_count(tmp_path):
    from deepscan.detectors.base import Detector, DetectorConfig

    class WithCritic(Detector):
        training_only = ("critic",)

        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(4, 1)
            self.critic = torch.nn.Linear(4, 1)

    detector = WithCritic()
    detector.config = DetectorConfig(name="with-critic", paper="-", input_size=4)
    assert detector.count_parameters() == 5
    path = tmp_path / "w.safetensors"
    save_weights(detector, path)
    from safetensors.torch import load_file

    assert set(load_file(str(path))) == {"body.weight", "body.bias"}
    fresh = WithCritic()
    fresh.config = detector.config
    load_weights(fresh, resolve_weights(None, path))  # the critic may be missing: inference never uses it
    assert torch.equal(fresh.body.weight, detector.body.weight)


def test_build_detector_follows_the_architecture_recorded_in_the_weights(tmp_path, detector):
    import json

    from deepscan.weights import build_detector

    path = tmp_path / "w.safetensors"
    save_weights(detector, path, {"detector_kwargs": json.dumps({"use_local": False}), "input_size": "128"})
    built, resolved = build_detector("faclue", path)
    assert built.fae.out_channels == 3 and built.config.input_size == 128 and resolved.source == "file"
    assert torch.equal(built.head.weight, detector.head.weight)
    with pytest.raises(WeightsError, match="weights of detector 'faclue', not 'pel'"):
        build_detector("pel", path)


# --- model cards, the resolution order, fp16 ---------------------------------------------------------------------



def _hub_cache(tmp_path, monkeypatch, repo_id: str, files: dict, *, offline: bool = True):
    """A Hugging Face cache built by hand, as a previous download would have left it, holding ``files``
    ({name: source path}) for ``repo_id``."""
    import shutil

    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        shutil.copyfile(source, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    return snapshot


def test_sibling_card_comes_with_file_weights_and_calibrates(tmp_path, shipped, calibration_card):
    weights = shipped.weights("tiny_a", 1.0, folder=tmp_path)
    shipped.card(weights, calibration=calibration_card, reliability={"min_face_px": 64, "min_sharpness": 20.0})
    resolved = resolve_weights(None, weights)
    assert resolved.card is not None and resolved.card_path == tmp_path / "tiny_a.card.json"
    assert resolved.calibration.threshold == 0.7
    assert resolved.calibration.probability([0.0]) == pytest.approx([0.2689414213699951])
    assert resolved.reliable_range.min_face_px == 64 and resolved.reliable_range.min_sharpness == 20.0
    assert resolve_weights(None, shipped.weights("tiny_b", 1.0, folder=tmp_path)).card is None  # no card: fine


def test_card_of_other_weights_or_with_a_failing_check_is_refused(tmp_path, shipped, calibration_card):
    weights = shipped.weights("tiny_a", 1.0, folder=tmp_path)
    shipped.card(weights, calibration=calibration_card)
    shipped.weights("tiny_a", 2.0, folder=tmp_path)  # retrained over the file: the card now describes other weights
    with pytest.raises(WeightsError, match="differs from its model card tiny_a.card.json"):
        resolve_weights(None, weights)
    broken = dict(calibration_card, bias=-0.5)
    shipped.card(weights, calibration=broken)
    with pytest.raises(WeightsError, match="tiny_a.card.json: calibration check fails"):
        resolve_weights(None, weights)
    (tmp_path / "tiny_a.card.json").write_text('{"schema": "something-else"}')
    with pytest.raises(WeightsError, match="not a usable model card"):
        resolve_weights(None, weights)


def test_card_for_another_detector_is_refused_when_building(tmp_path, shipped, calibration_card):
    from deepscan.weights import build_detector

    weights = shipped.weights("tiny_a", 1.0, folder=tmp_path)
    renamed = tmp_path / "other.safetensors"
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(weights)), str(renamed))  # no header metadata: only the card says which detector
    shipped.card(renamed, calibration=calibration_card)
    card = json.loads((tmp_path / "other.card.json").read_text())
    card["detector"]["name"] = "tiny_a"
    (tmp_path / "other.card.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="weights of detector 'tiny_a', not 'tiny_b'"):
        build_detector("tiny_b", renamed)


def test_shipped_weights_and_card_are_checked_against_sha256sums(shipped, calibration_card):
    shipped.add("tiny_a", 1.0, calibration=calibration_card)
    resolved = resolve_weights("tiny_a.safetensors")
    assert resolved.source == "shipped" and resolved.card.calibration.threshold == 0.7
    card = shipped.folder / "tiny_a.card.json"
    card.write_text(card.read_text().replace('"threshold": 0.7', '"threshold": 0.2'))  # altered after release
    with pytest.raises(WeightsError, match="tiny_a.card.json: shipped model card fails its SHA256SUMS check"):
        resolve_weights("tiny_a.safetensors")
    shipped.seal()
    resolve_weights("tiny_a.safetensors")
    (shipped.folder / "tiny_a.safetensors").write_bytes(b"tampered")
    with pytest.raises(WeightsError, match="shipped weights fail their SHA256SUMS check"):
        resolve_weights("tiny_a.safetensors")


def _card_pointing_to_hub(shipped, tmp_path, calibration):
    """Weights published on the hub; only their card (naming the repository) ships."""
    elsewhere = tmp_path / "release"
    elsewhere.mkdir()
    weights = shipped.weights("tiny_a", 1.0, folder=elsewhere)
    card = shipped.card(weights, calibration=calibration, hub={"repo_id": "lab/tiny", "filename": weights.name})
    (shipped.folder / card.name).write_bytes(card.read_bytes())
    shipped.seal()
    return weights


def test_hub_weights_named_by_the_shipped_card_come_from_the_cache_offline(tmp_path, monkeypatch, shipped,
                                                                           calibration_card):
    weights = _card_pointing_to_hub(shipped, tmp_path, calibration_card)
    _hub_cache(tmp_path, monkeypatch, "lab/tiny", {weights.name: weights})
    resolved = resolve_weights("tiny_a.safetensors")
    assert resolved.source == "hub" and resolved.path.name == "tiny_a.safetensors"
    assert resolved.card_path == shipped.folder / "tiny_a.card.json" and resolved.calibration.threshold == 0.7
    from deepscan.detectors import get_config
    from deepscan.weights import weights_status

    assert weights_status(get_config("tiny_a")) == "cached"


def test_hub_weights_that_differ_from_the_card_are_refused(tmp_path, monkeypatch, shipped, calibration_card):
    _card_pointing_to_hub(shipped, tmp_path, calibration_card)
    other = shipped.weights("tiny_a", 3.0, folder=tmp_path)
    _hub_cache(tmp_path, monkeypatch, "lab/tiny", {"tiny_a.safetensors": other})
    with pytest.raises(WeightsError, match="differs from its model card"):
        resolve_weights("tiny_a.safetensors")


def test_offline_with_nothing_found_says_what_to_do(tmp_path, monkeypatch, shipped, calibration_card):
    _card_pointing_to_hub(shipped, tmp_path, calibration_card)
    _hub_cache(tmp_path, monkeypatch, "lab/other", {})
    with pytest.raises(WeightsError) as raised:
        resolve_weights("tiny_a.safetensors")
    message = str(raised.value)
    assert "\n" not in message and "offline" in message
    assert "pass --weights FILE" in message and "go online" in message and "deepscan train" in message
    from deepscan.detectors import get_config
    from deepscan.weights import weights_status

    assert weights_status(get_config("tiny_a")) == "on the hub"


def test_online_the_weights_are_downloaded_from_the_repository(tmp_path, monkeypatch, shipped, calibration_card):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    weights = _card_pointing_to_hub(shipped, tmp_path, calibration_card)
    _hub_cache(tmp_path, monkeypatch, "lab/other", {}, offline=False)
    calls = []

    def fake_download(repo_id, filename, local_files_only=False, **kwargs):
        calls.append((repo_id, filename, local_files_only))
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        return str(weights)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    resolved = resolve_weights("tiny_a.safetensors")
    assert resolved.source == "hub" and resolved.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert calls == [("lab/tiny", "tiny_a.safetensors", True), ("lab/tiny", "tiny_a.safetensors", False)]

    def unreachable(repo_id, filename, local_files_only=False, **kwargs):
        raise LocalEntryNotFoundError("x") if local_files_only else ConnectionError("no route")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(WeightsError, match="could not fetch from the hub repository lab/tiny \\(ConnectionError\\)"):
        resolve_weights("tiny_a.safetensors")


def test_config_hub_repo_is_used_when_no_card_names_one(tmp_path, monkeypatch, shipped):
    weights = shipped.weights("tiny_a", 1.0, folder=tmp_path)
    _hub_cache(tmp_path, monkeypatch, "lab/config-repo", {weights.name: weights})
    assert resolve_weights("tiny_a.safetensors").source == "none"  # nothing names a repository: untrained
    resolved = resolve_weights("tiny_a.safetensors", hub_repo="lab/config-repo")
    assert resolved.source == "hub" and resolved.card is None


def test_hf_spec_picks_up_the_card_published_beside_the_weights(tmp_path, monkeypatch, shipped, calibration_card):
    release = tmp_path / "release"
    release.mkdir()
    weights = shipped.weights("tiny_a", 1.0, folder=release)
    card = shipped.card(weights, calibration=calibration_card)
    _hub_cache(tmp_path, monkeypatch, "lab/tiny", {weights.name: weights, card.name: card})
    resolved = resolve_weights(None, "hf://lab/tiny/tiny_a.safetensors")
    assert resolved.source == "hub" and resolved.calibration.threshold == 0.7


def test_half_precision_weights_load_into_a_float32_detector(tmp_path, detector):
    from safetensors.torch import load_file, save_file

    path = tmp_path / "fp16.safetensors"
    # Integer buffers (BatchNorm's num_batches_tracked) get a value a fresh detector does not have, so that their
    # loading is seen: they must arrive as stored, neither cast nor skipped.
    state = {name: (t.half() if t.is_floating_point() else torch.full_like(t, 7)).contiguous()
             for name, t in detector.state_dict().items()}
    save_file(state, str(path))
    assert load_file(str(path))["head.weight"].dtype == torch.float16
    fresh = create_detector("faclue", use_local=False)
    integers = [name for name, t in fresh.state_dict().items() if not t.is_floating_point()]
    assert integers and all(int(fresh.state_dict()[name].flatten()[0]) != 7 for name in integers)
    load_weights(fresh, resolve_weights(None, path))
    assert fresh.head.weight.dtype == torch.float32
    torch.testing.assert_close(fresh.head.weight, detector.head.weight.half().float())
    loaded = fresh.state_dict()
    for name in integers:
        assert loaded[name].dtype == detector.state_dict()[name].dtype and torch.equal(loaded[name], state[name]), name


# --- cards of hub weights: subfolders, missing cards and unreachable ones, the suffix first ----------------------


def _fake_hub(monkeypatch, files: dict, *, card_error: Exception | None = None):
    """An online hub holding ``files`` ({repo file name: local path}); nothing is cached. Records every call.
    ``card_error``: what fetching any ``.card.json`` raises instead (the hub unreachable, say)."""
    import huggingface_hub
    import huggingface_hub.constants as constants
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls = []

    def download(repo_id, filename, local_files_only=False, **kwargs):
        calls.append((repo_id, filename, local_files_only))
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        if card_error is not None and filename.endswith(".card.json"):
            raise card_error
        if filename not in files:
            raise EntryNotFoundError(f"{filename} is not in {repo_id}")
        return str(files[filename])

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return calls


def test_the_card_of_hub_weights_in_a_subfolder_is_looked_up_in_that_subfolder(tmp_path, monkeypatch, shipped,
                                                                               calibration_card):
    weights_dir, card_dir = tmp_path / "w", tmp_path / "c"  # not siblings: the card must come from the hub
    weights_dir.mkdir(), card_dir.mkdir()
    weights = shipped.weights("tiny_a", 1.0, folder=weights_dir)
    card = shipped.card(weights, calibration=calibration_card)
    moved = card_dir / card.name
    card.rename(moved)
    calls = _fake_hub(monkeypatch, {"v2/tiny_a.safetensors": weights, "v2/tiny_a.card.json": moved,
                                    "tiny_a.card.json": tmp_path / "wrong-card-at-the-root.json"})
    resolved = resolve_weights(None, "hf://lab/tiny/v2/tiny_a.safetensors")
    assert resolved.card_path == moved and resolved.calibration.threshold == 0.7
    assert ("lab/tiny", "v2/tiny_a.card.json", False) in calls
    assert not any(filename == "tiny_a.card.json" for _, filename, _ in calls)


def test_a_repository_without_a_card_gives_uncalibrated_weights(tmp_path, monkeypatch, shipped):
    weights = shipped.weights("tiny_a", 1.0, folder=tmp_path)
    _fake_hub(monkeypatch, {"tiny_a.safetensors": weights})
    resolved = resolve_weights(None, "hf://lab/tiny/tiny_a.safetensors")
    assert resolved.trained and resolved.card is None and not resolved.calibration.calibrated


@pytest.mark.parametrize("error", [ConnectionError("no route"), "unreachable", PermissionError("401 unauthorized")])
def test_a_card_that_cannot_be_fetched_is_an_error_not_an_uncalibrated_scan(tmp_path, monkeypatch, shipped, error):
    from huggingface_hub.errors import LocalEntryNotFoundError

    if error == "unreachable":  # what huggingface-hub raises when the hub cannot be reached and nothing is cached
        error = LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub")
    weights = shipped.weights("tiny_a", 1.0, folder=tmp_path)
    _fake_hub(monkeypatch, {"tiny_a.safetensors": weights}, card_error=error)
    with pytest.raises(WeightsError) as raised:
        resolve_weights(None, "hf://lab/tiny/tiny_a.safetensors")
    message = str(raised.value)
    assert "model card of tiny_a.safetensors" in message and type(error).__name__ in message and "\n" not in message


def test_an_hf_spec_that_is_not_safetensors_is_refused_before_any_download(monkeypatch, tmp_path):
    calls = _fake_hub(monkeypatch, {"model.pt": tmp_path / "model.pt"})
    for spec in ("hf://lab/tiny/model.pt", "hf://lab/tiny/sub/model.bin"):
        with pytest.raises(WeightsError, match="only .safetensors"):
            resolve_weights(None, spec)
    with pytest.raises(WeightsError, match="expected hf://OWNER/REPO/FILE"):
        resolve_weights(None, "hf://lab//x.safetensors")
    assert calls == []


def test_sha256_digests_match_whatever_the_case_of_their_hex_digits(tmp_path, shipped, calibration_card):
    weights = shipped.add("tiny_a", 1.0, calibration=calibration_card)
    card = shipped.folder / "tiny_a.card.json"
    data = json.loads(card.read_text())
    data["weights"]["sha256"] = data["weights"]["sha256"].upper()
    card.write_text(json.dumps(data))
    shipped.seal()
    sums = shipped.folder / "SHA256SUMS"
    sums.write_text("".join(f"{digest.upper()}  {name}\n" for digest, name in
                            (line.split() for line in sums.read_text().splitlines())))
    resolved = resolve_weights("tiny_a.safetensors")
    assert resolved.source == "shipped" and resolved.path == weights and resolved.card is not None


# --- model cards from strangers: every number the scanner uses is finite and in range ----------------------------

HUGE = "__huge__"  # written as 1e400: valid JSON that Python reads as infinity, past any parse_constant hook


@pytest.mark.parametrize("edit, message", [
    (lambda card: card["calibration"].update(scale=0.0), "calibration.scale"),
    (lambda card: card["calibration"].update(scale=-2.0), "calibration.scale"),
    (lambda card: card["calibration"].update(scale=HUGE), "calibration.scale"),
    (lambda card: card["calibration"].update(bias="NaN"), "calibration.bias"),
    (lambda card: card["calibration"].pop("check"), "needs its check"),
    (lambda card: card["calibration"]["check"].update(logits=[HUGE, 0.0, 2.0]), "calibration.check.logits"),
    (lambda card: card["calibration"]["check"].update(probabilities=[0.1, 1.5, 0.9]),
     "calibration.check.probabilities"),
    (lambda card: card.update(reliability={"min_face_px": HUGE}), "reliability.min_face_px"),
    (lambda card: card["detector"].update(input_size=0), "detector.input_size"),
    (lambda card: card["detector"].update(input_size=100_000), "detector.input_size"),
    (lambda card: card["weights"].update(sha256="not-a-digest"), "weights.sha256"),
])
def test_a_card_with_numbers_out_of_range_is_refused_in_one_line(tmp_path, shipped, edit, message, calibration_card):
    weights = shipped.weights("tiny_a", 1.0, folder=tmp_path)
    path = shipped.card(weights, calibration=json.loads(json.dumps(calibration_card)))
    card = json.loads(path.read_text())
    edit(card)
    path.write_text(json.dumps(card).replace(f'"{HUGE}"', "1e400"))
    with pytest.raises(WeightsError) as raised:
        resolve_weights(None, weights)
    assert "not a usable model card" in str(raised.value) and message in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_anywhere_in_a_card_are_refused(tmp_path, shipped, constant, calibration_card):
    weights = shipped.weights("tiny_a", 1.0, folder=tmp_path)
    path = shipped.card(weights, calibration=calibration_card)
    path.write_text(path.read_text().replace('"auc": 0.9', f'"auc": {constant}'))  # even where nobody reads it
    with pytest.raises(WeightsError, match=f"tiny_a.card.json: not valid JSON \\({constant} is not a number"):
        resolve_weights(None, weights)


@pytest.mark.parametrize("members, message", [
    ([], "at least one detector"),
    (["tiny_a", "tiny_a"], "tiny_a more than once"),
    (["tiny_a", " "], "non-empty name"),
])
def test_an_ensemble_card_names_each_member_once(tmp_path, members, message):
    from deepscan.model_card import ModelCardError, read_ensemble_card

    path = tmp_path / "ensemble.card.json"
    path.write_text(json.dumps({"schema": "deepscan.ensemble-card", "members": members,
                                "calibration": {"threshold": 0.6}}))
    with pytest.raises(ModelCardError, match=message):
        read_ensemble_card(path)
    path.write_text(json.dumps({"schema": "deepscan.ensemble-card", "members": ["tiny_a", "tiny_b"],
                                "calibration": {"threshold": 0.6}}))
    assert read_ensemble_card(path).members == ["tiny_a", "tiny_b"]


# --- building a detector from a stranger's settings ------------------------------------------------------------


def _with_header(tmp_path, detector, **metadata):
    path = tmp_path / "w.safetensors"
    save_weights(detector, path, {key: value if isinstance(value, str) else json.dumps(value)
                                  for key, value in metadata.items()})
    return path


@pytest.mark.parametrize("metadata, message", [
    ({"detector_kwargs": {"use_local": False, "pretrained": True}}, "sets pretrained, which would load"),
    ({"detector_kwargs": {"use_local": False, "checkpoint_path": "/etc/x.pth"}}, "sets checkpoint_path"),
    ({"detector_kwargs": {"use_local": False, "pretrained_cfg_overlay": {"file": "x"}}}, "sets pretrained_cfg_overlay"),
    ({"detector_kwargs": "[1, 2]"}, "not a JSON object"),
    ({"detector_kwargs": "{not json"}, "not valid JSON"),
    ({"detector_kwargs": {"use_local": False, "no_such_setting": 3}}, "do not build 'faclue' (TypeError"),
    ({"detector_kwargs": {"use_local": False, "backbone": "no_such_net"}},
     "do not build 'faclue' (TypeError: FAClue: backbone 'no_such_net' is not a timm model"),
    ({"detector_kwargs": {"use_local": False}, "input_size": "big"}, "input size 'big' is not a whole number"),
    ({"detector_kwargs": {"use_local": False}, "input_size": "0"}, "input size 0 px is outside 1-1024 px"),
    ({"detector_kwargs": {"use_local": False}, "input_size": "4096"}, "input size 4096 px is outside 1-1024 px"),
])
def test_a_strangers_detector_settings_that_do_not_build_are_one_line(tmp_path, detector, metadata, message):
    from deepscan.weights import build_detector

    path = _with_header(tmp_path, detector, **metadata)
    with pytest.raises(WeightsError) as raised:
        build_detector("faclue", path)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_loading_settings_that_are_off_load_nothing_and_are_dropped(tmp_path, detector):
    from deepscan.weights import build_detector

    path = _with_header(tmp_path, detector, detector_kwargs={"use_local": False, "pretrained": False})
    built, _ = build_detector("faclue", path)
    assert built.fae.out_channels == 3 and torch.equal(built.head.weight, detector.head.weight)


def test_a_card_that_asks_for_pretrained_weights_is_refused(tmp_path, shipped, calibration_card):
    from deepscan.weights import build_detector

    weights = shipped.weights("tiny_a", 1.0, folder=tmp_path)
    from safetensors.torch import load_file, save_file

    bare = tmp_path / "bare.safetensors"
    save_file(load_file(str(weights)), str(bare))  # no header metadata: the card's settings are used
    card = shipped.card(bare, calibration=calibration_card)
    data = json.loads(card.read_text())
    data["detector"].update(name="tiny_a", architecture_kwargs={"pretrained": True})
    card.write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="bare.safetensors: its model card's architecture_kwargs sets pretrained"):
        build_detector("tiny_a", bare)


def test_integrity_failures_and_unavailable_weights_are_told_apart(tmp_path, monkeypatch, shipped, calibration_card):
    from deepscan.weights import IntegrityError, WeightsUnavailableError

    weights = shipped.weights("tiny_a", 1.0, folder=tmp_path)
    shipped.card(weights, calibration=dict(calibration_card, bias=-0.5))  # the check no longer holds
    with pytest.raises(IntegrityError, match="calibration check fails"):
        resolve_weights(None, weights)
    shipped.card(weights, calibration=calibration_card)
    shipped.weights("tiny_a", 2.0, folder=tmp_path)  # other weights under the card
    with pytest.raises(IntegrityError, match="differs from its model card"):
        resolve_weights(None, weights)
    shipped.add("tiny_b", 1.0)
    (shipped.folder / "tiny_b.safetensors").write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match="SHA256SUMS"):
        resolve_weights("tiny_b.safetensors")
    _card_pointing_to_hub(shipped, tmp_path, calibration_card)
    _hub_cache(tmp_path, monkeypatch, "lab/other", {})  # offline, nothing cached
    with pytest.raises(WeightsUnavailableError, match="offline"):
        resolve_weights("tiny_a.safetensors")
