"""A reinforcement-learning controller (REINFORCE with a baseline), as in NASNet / MnasNet.

The controller is a factorised policy: one softmax over each gene's encoded values (the
per-decision softmaxes of an RNN controller, without the recurrence). Each generation it
samples a batch of unseen architectures, evaluates them, and moves its logits along
(reward - baseline) x grad log p(arch), the baseline an exponential moving average of
the rewards, the advantages scaled by their batch standard deviation.

Rewards (`reward` option):
- "hypervolume" (default, any objectives): how much the architecture adds to the
  hypervolume of the front evaluated before its batch, or, when dominated, minus how far it
  lies behind that front (the additive epsilon), objectives scaled by the archive's range;
  an infeasible architecture gets -1 minus its scaled constraint violation;
- "mnasnet": MnasNet's accuracy x (latency / target)^w with w = -0.07, the first
  objective as accuracy (maximised) and the first constraint's metric and limit as latency
  and target.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hwnas.errors import InputError
from hwnas.search.indicators import hypervolume, pareto_front
from hwnas.search.problem import ArchProblem, vector_key
from hwnas.search.strategies.base import SearchBudget, Strategy, register_strategy

DEFAULT_POP_SIZE = 50
DEFAULT_LEARNING_RATE = 0.2
BASELINE_DECAY = 0.9
MNASNET_W = -0.07
REWARDS = ("hypervolume", "mnasnet")
# draws from the policy per wanted architecture before filling with uniform random ones
_DRAWS_PER_ARCH = 20


@register_strategy("rl")
class ReinforceController(Strategy):
    """Options: `pop_size`, architectures sampled per update (50; under an evaluation budget K,
    min(50, max(10, K/20))), `learning_rate` of the logits (0.2), `reward` ("hypervolume" or
    "mnasnet")."""

    multi_objective = True

    def settings(self) -> dict:
        return {"pop_size": self.pop_size or DEFAULT_POP_SIZE, "learning_rate": self.learning_rate(),
                "reward": self.reward(), **self.options}

    def learning_rate(self) -> float:
        return float(self.options.get("learning_rate", DEFAULT_LEARNING_RATE))

    def reward(self) -> str:
        reward = str(self.options.get("reward", "hypervolume"))
        if reward not in REWARDS:
            raise InputError(f"unknown reward {reward!r}; expected one of {', '.join(REWARDS)}", field="reward")
        return reward

    def probabilities(self) -> list[np.ndarray]:
        """The controller's current distribution over each gene's values."""
        return [_softmax(t) for t in self.logits]

    def run(self, problem: ArchProblem, budget: SearchBudget, seed: int,
            on_generation: Callable[[], None]) -> None:
        reward_kind = self.reward()
        if reward_kind == "mnasnet" and (not problem.spec.constraints
                                         or problem.spec.objectives[0] not in problem.spec.maximize):
            raise InputError("the mnasnet reward needs a maximised first objective (accuracy) and a latency "
                             "constraint (its target)", field="reward")
        space, evaluator = problem.space, problem.evaluator
        rng = np.random.default_rng(seed)
        lo, hi = (np.asarray(b, dtype=np.int64) for b in space.bounds)
        self.logits = [np.zeros(int(b - a + 1)) for a, b in zip(lo, hi, strict=True)]
        batch_size = self.pop_size = self.population_size(budget, DEFAULT_POP_SIZE)
        F_seen = np.zeros((0, problem.n_obj))
        V_seen = np.zeros(0)
        baseline: float | None = None
        generation = 0
        while budget.generations_left(generation) and evaluator.remaining > 0:
            X = self._draw(problem, rng, lo, int(min(batch_size, evaluator.remaining)))
            if not len(X):
                break
            F, G = problem.evaluate_archs([space.decode(x) for x in X])
            violation = np.clip(G, 0, None).sum(axis=1) if G.size else np.zeros(len(X))
            if reward_kind == "mnasnet":
                rewards = _mnasnet_reward(problem, F, G)
            else:
                rewards = _hypervolume_reward(F_seen, V_seen, F, violation)
            F_seen, V_seen = np.vstack([F_seen, F]), np.r_[V_seen, violation]
            baseline = float(rewards.mean()) if baseline is None else (
                BASELINE_DECAY * baseline + (1 - BASELINE_DECAY) * float(rewards.mean()))
            advantage = rewards - baseline
            advantage = advantage / (advantage.std() + 1e-12) if len(advantage) > 1 else advantage
            for g, theta in enumerate(self.logits):
                onehot = np.eye(len(theta))[X[:, g] - lo[g]]
                theta += self.learning_rate() * (advantage[:, None] * (onehot - _softmax(theta))).mean(axis=0)
            on_generation()
            generation += 1

    def _draw(self, problem: ArchProblem, rng: np.random.Generator, lo: np.ndarray, count: int) -> np.ndarray:
        """`count` distinct unseen architectures (canonical encodings) from the policy; uniform
        random ones when the policy keeps proposing known ones."""
        space, evaluator = problem.space, problem.evaluator
        probs = self.probabilities()
        rows, keys = [], set()
        for attempt in range(_DRAWS_PER_ARCH * count * 2):
            if len(rows) >= count:
                break
            if attempt < _DRAWS_PER_ARCH * count:
                x = lo + np.array([rng.choice(len(p), p=p) for p in probs], dtype=np.int64)
                x = space.encode(space.decode(x))
            else:
                x = space.encode(space.sample(rng))
            key = vector_key(x)
            if key not in keys and not evaluator.knows_key(key):
                keys.add(key)
                rows.append(x)
        return np.array(rows, dtype=np.int64).reshape(len(rows), len(lo))


def _softmax(theta: np.ndarray) -> np.ndarray:
    z = np.exp(theta - theta.max())
    return z / z.sum()


def _hypervolume_reward(F_seen: np.ndarray, V_seen: np.ndarray, F: np.ndarray, violation: np.ndarray) -> np.ndarray:
    """Hypervolume each row of F adds to the feasible front of F_seen, or minus its additive
    epsilon behind it (objectives scaled by the range of everything feasible); -1 - scaled
    violation when infeasible."""
    feasible_seen = F_seen[V_seen <= 0]
    everything = np.vstack([feasible_seen, F[violation <= 0]])
    rewards = np.empty(len(F))
    scale_v = max(float(violation.max(initial=0.0)), float(V_seen.max(initial=0.0)), 1e-12)
    rewards[violation > 0] = -1.0 - violation[violation > 0] / scale_v
    if not len(everything):
        return rewards
    lo, hi = everything.min(axis=0), everything.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    front = (feasible_seen - lo) / span
    front = front[pareto_front(front)] if len(front) else front
    ref = np.full(F.shape[1], 1.1)
    base = hypervolume(front, ref) if len(front) else 0.0
    for i in np.flatnonzero(violation <= 0):
        p = (F[i] - lo) / span
        if not len(front):
            rewards[i] = hypervolume(p[None], ref)
            continue
        behind = float(np.min(np.max(p[None] - front, axis=1)))  # additive epsilon: > 0 when dominated
        rewards[i] = hypervolume(np.vstack([front, p]), ref) - base if behind <= 0 else -behind
    return rewards


def _mnasnet_reward(problem: ArchProblem, F: np.ndarray, G: np.ndarray) -> np.ndarray:
    accuracy = -F[:, 0]
    target = problem.spec.constraints[0][1]
    latency = G[:, 0] + target
    return accuracy * (np.clip(latency, 1e-12, None) / target) ** MNASNET_W
