"""Which task the next batch comes from, and which examples go into it.

Two levels, each seeded and resumable (``state_dict`` / ``load_state_dict`` hold plain JSON values,
so a resumed run continues the exact same sequence):

- a **task sampler** picks the task of each step, one class per strategy: :class:`ProportionalSampler`
  (p_t ∝ n_t), :class:`TemperatureSampler` (p_t ∝ n_t^(1/T): T=1 is proportional, large T nears
  uniform, which lifts a small task without starving the large one), :class:`RoundRobinSampler`
  (tasks take turns) and :class:`WeightedSampler` (explicit weights);
- :class:`LengthGroupedBatches` cuts one task's examples into batches, epoch after epoch: shuffle,
  then sort by length inside mega-batches of ~50 batches so that a batch holds sentences of similar
  length (less padding, faster on CPU) while the order stays random.

Torch-free (numpy only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mtst.config import SamplingConfig, SamplingStrategy
from mtst.errors import ConfigError

__all__ = [
    "LengthGroupedBatches",
    "ProportionalSampler",
    "RoundRobinSampler",
    "TaskSampler",
    "TemperatureSampler",
    "WeightedSampler",
    "build_task_sampler",
]


class TaskSampler:
    """Base of the task samplers: ``next(sampler)`` is the name of the task of the next batch."""

    names: tuple[str, ...]

    def __iter__(self) -> TaskSampler:
        return self

    def __next__(self) -> str:
        raise NotImplementedError

    @property
    def probabilities(self) -> dict[str, float]:
        """Long-run share of steps per task."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        raise NotImplementedError


class _RandomTaskSampler(TaskSampler):
    """Draws tasks independently with fixed probabilities from a seeded PCG64 generator."""

    kind = "random"

    def __init__(self, weights: Mapping[str, float], *, seed: int) -> None:
        if not weights:
            raise ConfigError("sampling: no tasks to sample from")
        for name, w in weights.items():
            if not (w >= 0 and math.isfinite(w)):
                raise ConfigError(f"sampling: weight of task {name!r} must be >= 0, got {w!r}")
        total = float(sum(weights.values()))
        if total <= 0:
            raise ConfigError(f"sampling: the task weights {dict(weights)} sum to 0")
        self.names = tuple(weights)
        self._p = np.array([weights[n] / total for n in self.names], dtype=np.float64)
        self._cdf = np.cumsum(self._p)
        self._cdf[-1] = 1.0
        self._rng = np.random.default_rng(seed)
        self.draws = 0

    def __next__(self) -> str:
        self.draws += 1
        i = int(np.searchsorted(self._cdf, self._rng.random(), side="right"))
        return self.names[min(i, len(self.names) - 1)]

    @property
    def probabilities(self) -> dict[str, float]:
        return {n: float(p) for n, p in zip(self.names, self._p, strict=True)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "names": list(self.names),
            "draws": self.draws,
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("kind") != self.kind or list(state.get("names", [])) != list(self.names):
            raise ConfigError(
                f"sampler state is for {state.get('kind')!r} over {state.get('names')}, "
                f"this run samples {self.kind!r} over {list(self.names)}"
            )
        self._rng.bit_generator.state = dict(state["rng"])
        self.draws = int(state["draws"])


class ProportionalSampler(_RandomTaskSampler):
    """p_t = n_t / Σ n: every training example is seen about equally often."""

    kind = "proportional"

    def __init__(self, sizes: Mapping[str, int], *, seed: int) -> None:
        super().__init__({n: float(s) for n, s in sizes.items()}, seed=seed)


class TemperatureSampler(_RandomTaskSampler):
    """p_t ∝ n_t^(1/T) (temperature-scaled sampling, as in multilingual / multi-task BERT training)."""

    kind = "temperature"

    def __init__(self, sizes: Mapping[str, int], *, temperature: float, seed: int) -> None:
        if not temperature > 0:
            raise ConfigError(f"sampling.temperature: expected a number > 0, got {temperature!r}")
        self.temperature = float(temperature)
        super().__init__({n: float(s) ** (1.0 / temperature) for n, s in sizes.items()}, seed=seed)


class WeightedSampler(_RandomTaskSampler):
    """p_t ∝ the weight given in the config (tasks not named get weight 0)."""

    kind = "weights"


class RoundRobinSampler(TaskSampler):
    """Tasks take turns, one batch each, in config order: small tasks cycle through more epochs."""

    kind = "round_robin"

    def __init__(self, names: Sequence[str]) -> None:
        if not names:
            raise ConfigError("sampling: no tasks to sample from")
        self.names = tuple(names)
        self.position = 0

    def __next__(self) -> str:
        name = self.names[self.position % len(self.names)]
        self.position += 1
        return name

    @property
    def probabilities(self) -> dict[str, float]:
        return {n: 1.0 / len(self.names) for n in self.names}

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "names": list(self.names), "position": self.position}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("kind") != self.kind or list(state.get("names", [])) != list(self.names):
            raise ConfigError(
                f"sampler state is for {state.get('kind')!r} over {state.get('names')}, "
                f"this run samples {self.kind!r} over {list(self.names)}"
            )
        self.position = int(state["position"])


def build_task_sampler(cfg: SamplingConfig, sizes: Mapping[str, int], *, seed: int) -> TaskSampler:
    """The sampler ``cfg`` asks for over the tasks in ``sizes`` (name -> number of training examples)."""
    empty = [n for n, s in sizes.items() if s < 1]
    if empty:
        raise ConfigError(f"sampling: task(s) {empty} have no training examples")
    if cfg.strategy is SamplingStrategy.PROPORTIONAL:
        return ProportionalSampler(sizes, seed=seed)
    if cfg.strategy is SamplingStrategy.TEMPERATURE:
        return TemperatureSampler(sizes, temperature=cfg.temperature, seed=seed)
    if cfg.strategy is SamplingStrategy.ROUND_ROBIN:
        return RoundRobinSampler(list(sizes))
    weights = {n: float(cfg.weights.get(n, 0.0)) for n in sizes}
    if sum(weights.values()) <= 0:
        raise ConfigError(f"sampling.weights: every task of this stage ({list(sizes)}) has weight 0")
    return WeightedSampler(weights, seed=seed)


class LengthGroupedBatches:
    """Endless, seeded batches of example indices of one task, length-grouped within mega-batches.

    Epoch ``e`` is a pure function of ``(seed, e)``: shuffle all indices, cut them into mega-batches
    of ``mega_batches * batch_size``, sort each mega-batch by length (longest first), cut it into
    batches, shuffle the batch order. The state is just ``(epoch, position)``.
    """

    def __init__(
        self, lengths: Sequence[int] | np.ndarray, batch_size: int, *, seed: int, mega_batches: int = 50
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1 or len(self.lengths) == 0:
            raise ConfigError("batches: need at least one example")
        if batch_size < 1:
            raise ConfigError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        if mega_batches < 1:
            raise ConfigError(f"mega_batches: expected an integer >= 1, got {mega_batches!r}")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.mega_batches = int(mega_batches)
        self.epoch = 0
        self.position = 0
        self._batches: list[np.ndarray] | None = None

    def __len__(self) -> int:
        """Batches per epoch."""
        mega = self.batch_size * self.mega_batches
        n = len(self.lengths)
        full, rest = divmod(n, mega)
        return full * self.mega_batches + math.ceil(rest / self.batch_size)

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(len(self.lengths))
        mega = self.batch_size * self.mega_batches
        batches: list[np.ndarray] = []
        for start in range(0, len(perm), mega):
            chunk = perm[start : start + mega]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    def __iter__(self) -> LengthGroupedBatches:
        return self

    def __next__(self) -> np.ndarray:
        if self._batches is None:
            self._batches = self.epoch_batches(self.epoch)
        if self.position >= len(self._batches):
            self.epoch += 1
            self.position = 0
            self._batches = self.epoch_batches(self.epoch)
        batch = self._batches[self.position]
        self.position += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "n": len(self.lengths),
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state["n"]) != len(self.lengths) or int(state["batch_size"]) != self.batch_size:
            raise ConfigError(
                f"batch state is for {state['n']} examples in batches of {state['batch_size']}, "
                f"this run has {len(self.lengths)} in batches of {self.batch_size} (did the data change?)"
            )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._batches = None
