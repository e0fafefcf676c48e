from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from deepscan.train.sampling import BalancedBatchSampler

# 5 real (0) and 23 fake (1) faces, interleaved so that index order says nothing about the label.
LABELS = [1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1]


def test_every_batch_holds_the_requested_number_of_each_class():
    sampler = BalancedBatchSampler(LABELS, n_real=3, n_fake=2, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for batch in batches:
        assert Counter(LABELS[i] for i in batch) == {0: 3, 1: 2}


def test_default_epoch_shows_every_face_of_the_class_needing_most_batches():
    sampler = BalancedBatchSampler(LABELS, n_real=2, n_fake=2, seed=0)
    # 23 fakes at 2 per batch need 12 batches; the 5 reals are cycled through in the meantime.
    assert len(sampler) == 12
    seen = [i for batch in sampler for i in batch]
    fakes = [i for i, label in enumerate(LABELS) if label == 1]
    assert set(fakes) <= set(seen)
    fake_counts = Counter(i for i in seen if LABELS[i] == 1)
    assert max(fake_counts.values()) - min(fake_counts.values()) <= 1


def test_the_smaller_class_is_oversampled_evenly():
    sampler = BalancedBatchSampler(LABELS, n_real=2, n_fake=2, seed=1)
    real_draws = [i for batch in sampler for i in batch if LABELS[i] == 0]
    assert len(real_draws) == 24
    # 24 draws of 5 faces from permutations laid end to end: each face 4 or 5 times, none left out.
    counts = Counter(real_draws)
    assert set(counts) == {i for i, label in enumerate(LABELS) if label == 0}
    assert set(counts.values()) <= {4, 5}


def test_same_seed_same_batches_and_successive_epochs_differ():
    first = BalancedBatchSampler(LABELS, seed=7)
    second = BalancedBatchSampler(LABELS, seed=7)
    epoch_one = list(first)
    assert epoch_one == list(second)
    assert list(first) != epoch_one


def test_batch_order_mixes_the_classes():
    sampler = BalancedBatchSampler(LABELS, n_real=4, n_fake=4, num_batches=50, seed=0)
    first_positions = Counter(LABELS[batch[0]] for batch in sampler)
    assert first_positions[0] > 5 and first_positions[1] > 5


def test_works_as_a_dataloader_batch_sampler():
    labels = torch.tensor(LABELS)
    dataset = TensorDataset(torch.arange(len(LABELS)), labels)
    loader = DataLoader(dataset, batch_sampler=BalancedBatchSampler(labels, n_real=2, n_fake=3, seed=0))
    for indices, batch_labels in loader:
        assert batch_labels.sum().item() == 3 and len(batch_labels) == 5
        assert torch.equal(labels[indices], batch_labels)


@pytest.mark.parametrize(
    "labels, kwargs, message",
    [
        ([1, 1, 1], {"n_real": 1, "n_fake": 1}, "no real face"),
        ([0, 0], {"n_real": 1, "n_fake": 1}, "no fake face"),
        ([0, 1, 2], {}, "0 \\(real\\) or 1 \\(fake\\)"),
        ([0, 1], {"n_real": 0, "n_fake": 0}, "at least one face"),
        ([0, 1], {"num_batches": 0}, "num_batches"),
    ],
)
def test_impossible_requests_are_refused_with_a_clear_message(labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        BalancedBatchSampler(labels, **kwargs)


def test_one_class_only_batches_are_allowed_when_asked_for():
    sampler = BalancedBatchSampler([1, 1, 1, 1], n_real=0, n_fake=2, seed=0)
    assert sorted(i for batch in sampler for i in batch) == [0, 1, 2, 3]
