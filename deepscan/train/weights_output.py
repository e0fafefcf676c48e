"""The weights a run writes: ``best.safetensors`` whenever an epoch is the best so far, and at the end the final
weights that ``deepscan scan --weights`` loads, as one file or as float16 shards with their index.

Each file is written whole or not at all, and carries in its metadata what is needed to rebuild the network it
fits (the detector's architecture kwargs and input size) and which recipe made it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from deepscan.runtime import atomic_write, sha256_file
from deepscan.train.detector_setup import architecture_kwargs
from deepscan.train.recipe import Recipe

BEST_WEIGHTS_NAME = "best.safetensors"


def weights_metadata(recipe: Recipe, input_size: int, epoch: int, recipe_sha256: str) -> dict[str, str]:
    """The safetensors metadata of the weights after ``epoch`` (counted from 0)."""
    from deepscan import __version__

    return {
        "format": "deepscan.detector-weights",
        "detector_kwargs": json.dumps(architecture_kwargs(recipe.detector.kwargs), sort_keys=True),
        "input_size": str(input_size),
        "epoch": str(epoch + 1),
        "recipe_sha256": recipe_sha256,
        "deepscan_version": __version__,
    }


def save_best(detector: torch.nn.Module, output: Path, metadata: dict[str, str]) -> None:
    """The best epoch's weights so far, as ``best.safetensors`` (atomically)."""
    from deepscan.weights import save_weights

    save_weights(detector, output / BEST_WEIGHTS_NAME, metadata)


def has_best(output: Path, best: dict | None) -> bool:
    """Validation chose an epoch, and its weights are there (without validation data there is no best)."""
    return best is not None and (output / BEST_WEIGHTS_NAME).exists()


def write_final_weights(detector: torch.nn.Module, output: Path, name: str, from_best: bool,
                        shard_mib: float | None, last_metadata: dict[str, str]) -> tuple[Path, dict]:
    """The run's final weights, ``<name>.safetensors``: the best checkpoint (``from_best``), else ``detector`` as
    it is after the last epoch (with ``last_metadata``). With ``shard_mib``, float16 shards of at most that many
    MiB and their index instead. Returns the path to give ``--weights`` and the model card's ``weights`` section."""
    from deepscan.weights.shards import index_path_for, read_index, split_file
    from deepscan.weights import save_weights

    single = output / f"{name}.safetensors"
    best = output / BEST_WEIGHTS_NAME
    if shard_mib is None:
        if from_best:
            with open(best, "rb") as source:
                atomic_write(single, lambda handle: shutil.copyfileobj(source, handle))
        else:
            save_weights(detector, single, last_metadata)
        return single, {"file": single.name, "sha256": sha256_file(single), "format": "safetensors"}
    index = index_path_for(single)
    if from_best:
        digest = split_file(best, index, shard_mib, fp16=True)
    else:
        digest = save_weights(detector, single, last_metadata, max_shard_mib=shard_mib, half=True)
    shards = [shard.file for shard in read_index(index).shards]
    return index, {"file": index.name, "sha256": digest, "format": "safetensors shards", "dtype": "float16",
                   "max_shard_mib": shard_mib, "shards": shards}
