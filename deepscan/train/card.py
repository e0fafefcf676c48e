"""The model card a run writes beside its final weights, ``<name>.card.json`` (schema ``deepscan.model-card``).

It says what the weights are (detector, kwargs, input size and normalisation), where they started from, the
recipe that made them, the data they saw, the validation that chose them and how the run went, so that a number
read off the weights can be traced back to its run. ``deepscan.model_card`` reads the parts a scan uses.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

from deepscan.runtime import atomic_write
from deepscan.train.data_preparation import TrainingData
from deepscan.train.detector_setup import architecture_kwargs
from deepscan.train.recipe import Recipe, recipe_to_dict

MODEL_CARD_SCHEMA = "deepscan.model-card"
CARD_SCHEMA_VERSION = 1


def detector_section(recipe: Recipe, config, input_size: int, parameters: int) -> dict:
    return {
        "name": recipe.detector.name,
        "paper": config.paper,
        "kwargs": recipe.detector.kwargs,
        "architecture_kwargs": architecture_kwargs(recipe.detector.kwargs),
        "input_size": input_size,
        "mean": list(config.mean),
        "std": list(config.std),
        "parameters": parameters,
    }


def recipe_section(recipe: Recipe, recipe_sha256: str, origin: str) -> dict:
    return {"sha256": recipe_sha256, "origin": origin, "content": recipe_to_dict(recipe)}


def data_section(recipe: Recipe, data: TrainingData) -> dict:
    content = recipe_to_dict(recipe)
    return {
        "train": [summary.as_dict() for summary in data.summaries["train"]],
        "val": [summary.as_dict() for summary in data.summaries.get("val", [])],
        "val_split": data.val_split,
        "train_entries": len(data.train_set),
        "val_entries": len(data.val_set),
        "pseudo_fakes": content["data"]["sbi"],
        "face": content["data"]["face"],
        "augment": content["augment"],
    }


def validation_section(best: dict | None, from_best: bool, select_on: str, epochs: int) -> dict:
    """The epoch whose weights were kept and why: the best on ``select_on``, or the last without validation."""
    if best is not None and from_best:
        return {"epoch": best["epoch"], "select_on": select_on, "metrics": best["val"]}
    return {"epoch": epochs, "select_on": "last epoch (no validation data)", "metrics": {}}


def training_section(history: list[dict], elapsed_s: float, *, world_size: int, device: torch.device,
                     precision: str, autocast_dtype: torch.dtype | None, max_minutes: float | None,
                     out_of_time: bool, started_at: datetime, schedule_epochs: int | None = None) -> dict:
    """``schedule_epochs``: what a cosine learning-rate schedule was planned for; it differs from ``epochs`` when
    a run was resumed with fewer (or more) epochs than it started with, so its rate never annealed as planned."""
    return {
        "epochs": len(history),
        "lr_schedule_epochs": schedule_epochs,
        "seconds": round(elapsed_s, 1),
        "seconds_per_epoch": [round(entry["train"]["seconds"], 1) for entry in history],
        "world_size": world_size,
        "device": str(device),
        "device_name": device_name(device),
        "precision": precision,
        "autocast": str(autocast_dtype).removeprefix("torch.") if autocast_dtype else None,
        "max_minutes": max_minutes,
        "stopped_by_time_budget": out_of_time,
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def device_name(device: torch.device) -> str:
    """What trained it, in words a card can print: the GPU's name, or the CPU's core count."""
    if device.type == "cuda":
        return f"one {torch.cuda.get_device_name(device)}"
    return f"a {os.cpu_count()}-core CPU"


def software_section() -> dict:
    from deepscan import __version__

    return {"deepscan": __version__, "torch": torch.__version__, "python": platform.python_version()}


def write_card(output: Path, name: str, sections: dict) -> Path:
    """``<name>.card.json`` in ``output``: the schema, then ``sections`` in order (atomically)."""
    card = {"schema": MODEL_CARD_SCHEMA, "schema_version": CARD_SCHEMA_VERSION, **sections}
    path = output / f"{name}.card.json"
    atomic_write(path, json.dumps(card, indent=2, default=str))
    return path
