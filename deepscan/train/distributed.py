"""Data-parallel training over processes started by ``torchrun`` (one per GPU, or several on a CPU with gloo).

Why not ``torch.nn.parallel.DistributedDataParallel`` itself: a deepscan detector owns its optimisation step
(``Detector.training_step`` runs zero_grad, backward and step; RALF runs a discriminator step and a model step,
with two backward passes, on one forward). DDP's wrapper only synchronises gradients for a forward that goes
through the wrapper and a single backward after it, which neither holds here. The same data parallelism is
therefore done at the one point every detector shares: the optimiser step. ``AveragingOptimizer`` averages the
gradients of its parameters over all processes (one all-reduce per optimiser step, over one flat buffer) just
before stepping, which is what DDP's reducer computes. Every process starts from the same weights and applies
the same averaged update, so the replicas stay identical; buffers (batch-norm statistics, RALF's embedding
centre) are averaged before each validation and checkpoint.

The batches of an epoch are planned identically on every process; each takes its slice of every global batch
(``batch[rank::world]``), so a run on N processes sees the same data per step as a run on one.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str) -> DistributedContext:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on the CPU); a no-op for a single process."""
    if not launched_by_torchrun():
        return DistributedContext()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        # Face extraction before the first batch can take long on a big dataset: allow for it.
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=6))
    return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def any_process(context: DistributedContext, flag: bool, device: torch.device) -> bool:
    """True on every process when ``flag`` is true on any (so that all stop at the same step)."""
    if not context.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def average_tensors(tensors: list[torch.Tensor], world_size: int) -> None:
    """In-place mean over processes of same-shaped tensors, through one flat buffer per dtype."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in tensors:
        by_dtype.setdefault(tensor.dtype, []).append(tensor)
    for group in by_dtype.values():
        flat = torch.cat([tensor.reshape(-1) for tensor in group])
        dist.all_reduce(flat)
        flat /= world_size
        offset = 0
        for tensor in group:
            count = tensor.numel()
            tensor.copy_(flat[offset : offset + count].view_as(tensor))
            offset += count


class AveragingOptimizer:
    """An optimiser whose ``step`` first averages its parameters' gradients over all processes.

    A parameter that got no gradient on some process counts as zero there; one that got none anywhere keeps
    ``None`` (so the optimiser skips it, as it would on one process).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, world_size: int):
        self.optimizer = optimizer
        self.world_size = world_size

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def _synchronise(self) -> None:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if not params:
            return
        present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
        dist.all_reduce(present)
        used = [p for p, count in zip(params, present.tolist()) if count > 0]
        for p in used:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        average_tensors([p.grad for p in used], self.world_size)

    def step(self, closure=None):
        self._synchronise()
        return self.optimizer.step(closure)

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state)


def average_buffers(module: torch.nn.Module, context: DistributedContext) -> None:
    """Mean of the floating-point buffers (batch-norm statistics, running centres) over processes."""
    if not context.enabled:
        return
    buffers = [buffer for buffer in module.buffers() if buffer.is_floating_point()]
    if buffers:
        with torch.no_grad():
            average_tensors(buffers, context.world_size)


def check_replicas_agree(module: torch.nn.Module, context: DistributedContext) -> None:
    """Raise if the processes' weights have drifted apart (a broken gradient average would show here)."""
    if not context.enabled:
        return
    with torch.no_grad():
        checksum = torch.stack([p.detach().double().sum() for p in module.parameters()]).sum().view(1)
        gathered = [torch.zeros_like(checksum) for _ in range(context.world_size)]
        dist.all_gather(gathered, checksum)
    values = [float(value.item()) for value in gathered]
    if max(values) - min(values) > 1e-6 * max(1.0, abs(values[0])):
        raise RuntimeError(f"distributed replicas disagree after training (weight checksums {values})")


def gather_objects(obj, context: DistributedContext) -> list:
    if not context.enabled:
        return [obj]
    gathered: list = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered
