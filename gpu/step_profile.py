"""Where a training step's time goes, on the lent GPU: a recipe's detector stepped on random faces (no data loading),
in each memory layout, then the slowest operators of the faster layout.

    python3 gpu/step_profile.py recipes/gpu/ralf.yaml [--steps 20] [--set KEY=VALUE ...]   # on the GPU machine
    python3 gpu/step_profile.py recipes/gpu/ralf.yaml --steps 2 --set device=cpu --set input_size=64 \\
        --set detector.kwargs.image_size=64 --set batch_size=4                        # rehearsal on a CPU

deepscan is not installed on the GPU machine: run from the repository root with PYTHONPATH=$PWD and pydantic from
the carried wheels, as gpu/run.sh sets up (``pip install --no-index --no-deps --target /tmp/site
local/gpu-wheels/*.whl``, then PYTHONPATH=/tmp/site:$PWD). The recipes of recipes/gpu read their ImageNet trunk from
the face-crop bundle (local/gpu-bundle): carry it, or override the paths.

RALF trained at 58-68 faces/s on an H200 with the GPU mostly idle while its data workers could feed ~1,800 faces/s:
the step itself is what to measure. Faces/s here is the most a run of this recipe can reach; far above what
`deepscan train` reached, the loop around the step is to blame; near it, the step.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from deepscan.train.detector_setup import autocast, tensor_layout
from deepscan.train.distributed import init_distributed
from deepscan.train.recipe import apply_override, parse_override, read_recipe_data, validate_recipe, with_changes
from deepscan.train.trainer import Trainer, TrainOptions


def build(recipe, origin: Path, unused_output: Path) -> Trainer:
    trainer = Trainer(recipe, TrainOptions(output=unused_output, recipe_origin=str(origin)),
                      init_distributed(recipe.device))
    trainer.setup_model()
    return trainer


def step_once(trainer: Trainer, faces: torch.Tensor, labels: torch.Tensor) -> None:
    layout = tensor_layout(trainer.recipe)
    with autocast(trainer.device, trainer.autocast_dtype):
        trainer.detector.training_step(faces.contiguous(memory_format=layout), labels,
                                       trainer.optimisation.step_optimizers, progress=0.5)


def faces_per_second(trainer: Trainer, steps: int) -> float:
    recipe, device = trainer.recipe, trainer.device
    size = recipe.input_size or trainer.detector.config.input_size
    faces = torch.rand(recipe.batch_size, 3, size, size, device=device)
    labels = (torch.arange(recipe.batch_size, device=device) % 2).float()  # balanced, as the recipes sample
    trainer.detector.train()
    for _ in range(3):  # cuDNN's search and the allocator's first requests happen here
        step_once(trainer, faces, labels)
    synchronize(device)
    began = time.perf_counter()
    for _ in range(steps):
        step_once(trainer, faces, labels)
    synchronize(device)
    return steps * recipe.batch_size / (time.perf_counter() - began)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = parser.parse_args()
    data = read_recipe_data(args.recipe)
    for text in args.overrides:
        keys, value = parse_override(text)
        apply_override(data, keys, value, text)
    recipe = validate_recipe(data, str(args.recipe), args.recipe.resolve().parent)
    origin = args.recipe.resolve()  # relative paths in the recipe are read from its folder

    with tempfile.TemporaryDirectory() as folder:
        profile(recipe, origin, Path(folder), args.steps)


def profile(recipe, origin: Path, unused: Path, steps: int) -> None:
    rates = {}
    for channels_last in (False, True):
        trainer = build(with_changes(recipe, channels_last=channels_last), origin, unused)
        rates[channels_last] = faces_per_second(trainer, steps)
        print(f"channels_last={channels_last}: {rates[channels_last]:.1f} faces/s "
              f"(batch {recipe.batch_size}, {trainer.device}, autocast {trainer.autocast_dtype})", flush=True)
    best = max(rates, key=rates.get)
    print(f"channels_last / contiguous: {rates[True] / rates[False]:.2f}x")

    trainer = build(with_changes(recipe, channels_last=best), origin, unused)
    size = recipe.input_size or trainer.detector.config.input_size
    faces = torch.rand(recipe.batch_size, 3, size, size, device=trainer.device)
    labels = (torch.arange(recipe.batch_size, device=trainer.device) % 2).float()
    for _ in range(3):
        step_once(trainer, faces, labels)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if trainer.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profile:
        for _ in range(min(steps, 5)):
            step_once(trainer, faces, labels)
        synchronize(trainer.device)
    sort = "self_cuda_time_total" if trainer.device.type == "cuda" else "self_cpu_time_total"
    print(profile.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60))


if __name__ == "__main__":
    main()
