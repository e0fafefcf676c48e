"""What `deepscan train` decides before and after a run, reached without the command line."""

from __future__ import annotations

from pathlib import Path

from deepscan.train.launch import chosen_weights, command_changes, default_output


def test_a_run_goes_to_runs_and_the_recipe_name_by_default():
    assert default_output(Path("recipes/gpu/pel.yaml")) == Path("runs/pel")


def test_init_paths_are_read_from_the_working_directory_and_other_options_become_recipe_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    changes = command_changes(["optim.lr=1e-4", "epochs=3"], "start/faclue.safetensors", "cpu")
    assert changes == ["optim.lr=1e-4", "epochs=3", f"init={tmp_path / 'start' / 'faclue.safetensors'}", "device=cpu"]
    assert command_changes([], "shipped", None) == ["init=shipped"]
    assert command_changes([], "hf://owner/repo/file.safetensors", None) == ["init=hf://owner/repo/file.safetensors"]
    assert command_changes(["epochs=1"], None, None) == ["epochs=1"]


def test_the_kept_weights_are_named_by_their_epoch_and_score():
    assert chosen_weights({"epoch": 3, "value": 0.728}, "val_auc") == "epoch 3 (val auc 0.7280)"
    # Selection on the loss keeps its negative (higher is better); the user reads the loss itself.
    assert chosen_weights({"epoch": 2, "value": -0.6214}, "val_loss") == "epoch 2 (val loss 0.6214)"
    assert chosen_weights(None, "val_auc") == "the last epoch"
