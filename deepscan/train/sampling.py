"""Class-balanced batches: every batch holds a fixed number of real and of fake faces.

MC-LCR (Wang et al., KBS 2022, sec. 4.1) trains on batches of 8 real + 8 fake faces so that its supervised
contrastive loss always sees positives and negatives; RALF also trains on class-balanced batches. The sampler works
from labels alone (1 = fake, 0 = real), so any detector and any dataset can use it:

    sampler = BalancedBatchSampler(dataset_labels, n_real=8, n_fake=8, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler)
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class BalancedBatchSampler(Sampler[list[int]]):
    """Yields batches of ``n_real`` indices labelled 0 and ``n_fake`` indices labelled 1, shuffled together.

    Each class is drawn without replacement from a fresh random permutation; a class that runs out before the
    epoch ends starts a new permutation, so the smaller class is oversampled evenly: no face comes back before
    every face of its class has been used. An epoch is by default just long enough for every face of the class
    that needs the most batches to appear once; ``num_batches`` sets it explicitly. ``seed`` makes the sequence
    of epochs reproducible.
    """

    def __init__(
        self,
        labels: Sequence[int] | torch.Tensor,
        n_real: int = 8,
        n_fake: int = 8,
        num_batches: int | None = None,
        seed: int | None = None,
    ):
        labels = torch.as_tensor(labels).flatten()
        if labels.numel() and not torch.isin(labels, torch.tensor([0, 1], dtype=labels.dtype)).all():
            raise ValueError("labels must be 0 (real) or 1 (fake)")
        if n_real < 0 or n_fake < 0 or n_real + n_fake == 0:
            raise ValueError(f"need n_real, n_fake >= 0 and at least one face per batch, got {n_real} + {n_fake}")
        self.real_indices = torch.nonzero(labels == 0).flatten()
        self.fake_indices = torch.nonzero(labels == 1).flatten()
        for name, wanted, available in (
            ("real", n_real, self.real_indices),
            ("fake", n_fake, self.fake_indices),
        ):
            if wanted and not len(available):
                raise ValueError(f"{wanted} {name} faces per batch requested, but the labels hold no {name} face")
        self.n_real = n_real
        self.n_fake = n_fake
        if num_batches is None:
            num_batches = max(
                math.ceil(len(self.real_indices) / n_real) if n_real else 0,
                math.ceil(len(self.fake_indices) / n_fake) if n_fake else 0,
            )
        if num_batches < 1:
            raise ValueError(f"num_batches must be positive, got {num_batches}")
        self.num_batches = num_batches
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    @property
    def batch_size(self) -> int:
        return self.n_real + self.n_fake

    def __len__(self) -> int:
        return self.num_batches

    def _draw(self, indices: torch.Tensor, per_batch: int) -> torch.Tensor:
        """``(num_batches, per_batch)`` indices: permutations of ``indices`` laid end to end."""
        needed = self.num_batches * per_batch
        if needed == 0:
            return indices.new_empty(self.num_batches, 0)
        rounds = math.ceil(needed / len(indices))
        order = torch.cat([indices[torch.randperm(len(indices), generator=self.generator)] for _ in range(rounds)])
        return order[:needed].view(self.num_batches, per_batch)

    def __iter__(self) -> Iterator[list[int]]:
        batches = torch.cat([self._draw(self.real_indices, self.n_real), self._draw(self.fake_indices, self.n_fake)], 1)
        for batch in batches:
            # Mixed order inside the batch, so that nothing downstream can learn the label from the position.
            yield batch[torch.randperm(len(batch), generator=self.generator)].tolist()
