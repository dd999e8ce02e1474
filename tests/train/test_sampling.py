from __future__ import annotations

import itertools
import json
from collections import Counter

import numpy as np
import pytest

from mtst.config import SamplingConfig
from mtst.errors import ConfigError
from mtst.sampling import (
    LengthGroupedBatches,
    ProportionalSampler,
    RoundRobinSampler,
    TemperatureSampler,
    WeightedSampler,
    build_task_sampler,
)

SIZES = {"sst2": 67_349, "ner": 5_000, "intent": 1_000}
N = 20_000


def _freq(sampler, n: int = N) -> dict[str, float]:
    counts = Counter(itertools.islice(sampler, n))
    return {k: counts[k] / n for k in sampler.names}


def _tolerance(p: float, n: int = N) -> float:
    return 4.5 * (p * (1 - p) / n) ** 0.5 + 1e-9  # ~4.5 standard deviations of a binomial share


def test_proportional_follows_dataset_sizes() -> None:
    sampler = ProportionalSampler(SIZES, seed=0)
    total = sum(SIZES.values())
    freq = _freq(sampler)
    for name, size in SIZES.items():
        assert abs(freq[name] - size / total) < _tolerance(size / total)
    assert sampler.probabilities == pytest.approx({k: v / total for k, v in SIZES.items()})


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_temperature_flattens_the_mix(temperature: float) -> None:
    sampler = TemperatureSampler(SIZES, temperature=temperature, seed=1)
    scaled = {k: v ** (1 / temperature) for k, v in SIZES.items()}
    expected = {k: v / sum(scaled.values()) for k, v in scaled.items()}
    freq = _freq(sampler)
    for name in SIZES:
        assert abs(freq[name] - expected[name]) < _tolerance(expected[name])
    if temperature == 1.0:
        assert sampler.probabilities == pytest.approx(ProportionalSampler(SIZES, seed=0).probabilities)
    else:  # the small task gets more than its proportional share, the large one less
        assert sampler.probabilities["intent"] > 1_000 / sum(SIZES.values())
        assert sampler.probabilities["sst2"] < 67_349 / sum(SIZES.values())


def test_weighted_uses_the_given_weights_and_skips_zero() -> None:
    sampler = WeightedSampler({"a": 1.0, "b": 3.0, "c": 0.0}, seed=2)
    freq = _freq(sampler)
    assert abs(freq["a"] - 0.25) < _tolerance(0.25) and abs(freq["b"] - 0.75) < _tolerance(0.75)
    assert freq["c"] == 0.0


def test_round_robin_alternates() -> None:
    sampler = RoundRobinSampler(["a", "b", "c"])
    assert list(itertools.islice(sampler, 7)) == ["a", "b", "c", "a", "b", "c", "a"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: ProportionalSampler(SIZES, seed=5),
        lambda: TemperatureSampler(SIZES, temperature=2.0, seed=5),
        lambda: WeightedSampler({"a": 1, "b": 2}, seed=5),
        lambda: RoundRobinSampler(["a", "b", "c"]),
    ],
)
def test_samplers_are_seeded_and_resume_the_same_sequence(make) -> None:
    a, b = make(), make()
    assert list(itertools.islice(a, 500)) == list(itertools.islice(b, 500))  # same seed, same sequence
    state = json.loads(json.dumps(a.state_dict()))  # survives a JSON round trip (no pickle)
    rest = list(itertools.islice(a, 300))
    fresh = make()
    fresh.load_state_dict(state)
    assert list(itertools.islice(fresh, 300)) == rest


def test_different_seeds_give_different_sequences() -> None:
    a = list(itertools.islice(ProportionalSampler({"x": 1, "y": 1}, seed=0), 64))
    b = list(itertools.islice(ProportionalSampler({"x": 1, "y": 1}, seed=1), 64))
    assert a != b


def test_sampler_state_of_another_kind_is_refused() -> None:
    state = ProportionalSampler(SIZES, seed=0).state_dict()
    with pytest.raises(
        ConfigError,
        match=r"sampler state is for 'proportional' over \['sst2', 'ner', 'intent'\], this run samples 'temperature'",
    ):
        TemperatureSampler(SIZES, temperature=2, seed=0).load_state_dict(state)


def test_build_task_sampler_picks_the_class_per_strategy() -> None:
    assert isinstance(build_task_sampler(SamplingConfig(), SIZES, seed=0), ProportionalSampler)
    t = build_task_sampler(SamplingConfig(strategy="temperature", temperature=3.0), SIZES, seed=0)
    assert isinstance(t, TemperatureSampler) and t.temperature == 3.0
    assert isinstance(
        build_task_sampler(SamplingConfig(strategy="round_robin"), SIZES, seed=0), RoundRobinSampler
    )
    w = build_task_sampler(SamplingConfig(strategy="weights", weights={"ner": 1.0}), SIZES, seed=0)
    assert isinstance(w, WeightedSampler) and w.probabilities == {"sst2": 0.0, "ner": 1.0, "intent": 0.0}
    with pytest.raises(
        ConfigError, match=r"sampling.weights: every task of this stage \(\['intent'\]\) has weight 0"
    ):
        build_task_sampler(SamplingConfig(strategy="weights", weights={"ner": 1.0}), {"intent": 10}, seed=0)
    with pytest.raises(ConfigError, match=r"sampling: task\(s\) \['ner'\] have no training examples"):
        build_task_sampler(SamplingConfig(), {"intent": 10, "ner": 0}, seed=0)


# ---------------------------------------------------------------------- batches within a task
def test_each_epoch_covers_every_example_once() -> None:
    lengths = np.random.default_rng(0).integers(3, 60, size=1003)
    batches = LengthGroupedBatches(lengths, 16, seed=4, mega_batches=5)
    per_epoch = len(batches)
    assert per_epoch == 63  # 12 full mega-batches of 5 batches, then 43 examples -> 3 batches
    epoch0 = [next(batches) for _ in range(per_epoch)]
    assert sorted(np.concatenate(epoch0).tolist()) == list(range(1003))
    assert all(len(b) <= 16 for b in epoch0)
    epoch1 = [next(batches) for _ in range(per_epoch)]
    assert sorted(np.concatenate(epoch1).tolist()) == list(range(1003))
    assert batches.epoch == 1
    assert [b.tolist() for b in epoch0] != [b.tolist() for b in epoch1]  # reshuffled


def test_length_grouping_cuts_padding() -> None:
    lengths = np.random.default_rng(1).integers(3, 120, size=4000)

    def padding(batches) -> int:
        return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in batches)

    grouped = LengthGroupedBatches(lengths, 32, seed=0)
    grouped_epoch = grouped.epoch_batches(0)
    perm = np.random.default_rng(0).permutation(len(lengths))
    random_epoch = [perm[i : i + 32] for i in range(0, len(perm), 32)]
    assert padding(grouped_epoch) < 0.2 * padding(random_epoch)
    # and the order of batches is still random: not sorted by length across the epoch
    maxima = [int(lengths[b].max()) for b in grouped_epoch]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)


def test_batches_are_seeded_and_resume_exactly() -> None:
    lengths = np.arange(1, 101)
    a, b = LengthGroupedBatches(lengths, 8, seed=9), LengthGroupedBatches(lengths, 8, seed=9)
    first = [next(a).tolist() for _ in range(20)]
    assert first == [next(b).tolist() for _ in range(20)]  # crosses an epoch boundary (13 batches per epoch)
    state = json.loads(json.dumps(a.state_dict()))
    rest = [next(a).tolist() for _ in range(30)]
    fresh = LengthGroupedBatches(lengths, 8, seed=9)
    fresh.load_state_dict(state)
    assert [next(fresh).tolist() for _ in range(30)] == rest
    other = LengthGroupedBatches(lengths, 8, seed=10)
    assert [next(other).tolist() for _ in range(20)] != first


def test_batch_state_of_other_data_is_refused() -> None:
    state = LengthGroupedBatches(np.ones(50), 8, seed=0).state_dict()
    with pytest.raises(
        ConfigError, match=r"batch state is for 50 examples in batches of 8, this run has 49 in batches of 8"
    ):
        LengthGroupedBatches(np.ones(49), 8, seed=0).load_state_dict(state)
