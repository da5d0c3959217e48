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
- "tchebycheff": `controllers` policies (decomposition, as in MOEA/D), each rewarded by minus
  the weighted Tchebycheff distance of the scaled objectives from the ideal point, the
  weights spread evenly over the front's directions;
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

DEFAULT_POP_SIZE = 10
DEFAULT_LEARNING_RATE = 0.5
DEFAULT_CONTROLLERS = 1
BASELINE_DECAY = 0.9
MNASNET_W = -0.07
REWARDS = ("hypervolume", "tchebycheff", "mnasnet")
# draws from the policy per wanted architecture before filling with uniform random ones
_DRAWS_PER_ARCH = 20


@register_strategy("rl")
class ReinforceController(Strategy):
    """Options: `pop_size`, architectures sampled per update (10: many small updates beat few
    large ones under a budget of hundreds), `learning_rate` of the logits (0.5), `reward`
    ("hypervolume", "tchebycheff" or "mnasnet"), `controllers` for "tchebycheff" (1)."""

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

    def controllers(self) -> int:
        return int(self.options.get("controllers", DEFAULT_CONTROLLERS))

    def probabilities(self, controller: int = 0) -> list[np.ndarray]:
        """A controller's current distribution over each gene's values."""
        return [_softmax(t) for t in self.controller_logits[controller]]

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
        weights = _weights(problem.n_obj, 1 if reward_kind == "mnasnet" else self.controllers())
        self.controller_logits = [[np.zeros(int(b - a + 1)) for a, b in zip(lo, hi, strict=True)]
                                  for _ in weights]
        batch_size = self.pop_size = int(self.pop_size or DEFAULT_POP_SIZE)
        per_controller = max(1, batch_size // len(weights))
        F_seen = np.zeros((0, problem.n_obj))
        V_seen = np.zeros(0)
        baselines: list[float | None] = [None] * len(weights)
        generation = 0
        while budget.generations_left(generation) and evaluator.remaining > 0:
            drawn, owner = [], []
            taken: set = set()
            for c, logits in enumerate(self.controller_logits):
                want = int(min(per_controller, evaluator.remaining - len(owner)))
                if want <= 0:
                    break
                X_c = self._draw(problem, rng, lo, [_softmax(t) for t in logits], want, taken)
                drawn.append(X_c)
                owner += [c] * len(X_c)
            X = np.vstack(drawn) if drawn else np.zeros((0, len(lo)), dtype=np.int64)
            if not len(X):
                break
            owner_arr = np.array(owner)
            F, G = problem.evaluate_archs([space.decode(x) for x in X])
            violation = np.clip(G, 0, None).sum(axis=1) if G.size else np.zeros(len(X))
            F_all, V_all = np.vstack([F_seen, F]), np.r_[V_seen, violation]
            for c, logits in enumerate(self.controller_logits):
                mine = owner_arr == c
                if not mine.any():
                    continue
                if reward_kind == "mnasnet":
                    rewards = _mnasnet_reward(problem, F[mine], G[mine])
                elif reward_kind == "hypervolume":
                    rewards = _hypervolume_reward(F_seen, V_seen, F[mine], violation[mine])
                else:
                    rewards = _tchebycheff_reward(F_all, V_all, F[mine], violation[mine], weights[c])
                baselines[c] = _update(logits, X[mine] - lo, rewards, baselines[c], self.learning_rate())
            F_seen, V_seen = F_all, V_all
            on_generation()
            generation += 1

    def _draw(self, problem: ArchProblem, rng: np.random.Generator, lo: np.ndarray, probs: list[np.ndarray],
              count: int, keys: set) -> np.ndarray:
        """`count` distinct unseen architectures (canonical encodings, not in `keys`, which
        receives theirs) from the policy `probs`; uniform random ones when the policy keeps
        proposing known ones."""
        space, evaluator = problem.space, problem.evaluator
        rows = []
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


def _weights(n_obj: int, count: int) -> np.ndarray:
    """`count` weight vectors spread evenly over the simplex (two objectives: a line)."""
    if n_obj == 1 or count == 1:
        return np.full((1, n_obj), 1.0 / n_obj)
    t = (np.arange(count) + 0.5) / count
    if n_obj == 2:
        return np.stack([t, 1 - t], axis=1)
    rng = np.random.default_rng(0)  # fixed: the decomposition is part of the method, not of a run
    return rng.dirichlet(np.ones(n_obj), size=count)


def _update(logits: list[np.ndarray], Z: np.ndarray, rewards: np.ndarray, baseline: float | None,
            learning_rate: float) -> float:
    """One REINFORCE step of a factorised softmax policy on the choices Z (0-based); the new baseline."""
    baseline = float(rewards.mean()) if baseline is None else (
        BASELINE_DECAY * baseline + (1 - BASELINE_DECAY) * float(rewards.mean()))
    advantage = rewards - baseline
    if len(advantage) > 1 and advantage.std() > 0:
        advantage = advantage / advantage.std()
    for g, theta in enumerate(logits):
        onehot = np.eye(len(theta))[Z[:, g]]
        theta += learning_rate * (advantage[:, None] * (onehot - _softmax(theta))).mean(axis=0)
    return baseline


def _tchebycheff_reward(F_all: np.ndarray, V_all: np.ndarray, F: np.ndarray, violation: np.ndarray,
                        weight: np.ndarray) -> np.ndarray:
    """Minus the weighted Tchebycheff distance of each row of F from the ideal point, objectives
    scaled by the range of every feasible evaluation; -1 - scaled violation when infeasible."""
    feasible = F_all[V_all <= 0]
    rewards = np.empty(len(F))
    scale_v = max(float(V_all.max(initial=0.0)), 1e-12)
    rewards[violation > 0] = -1.0 - violation[violation > 0] / scale_v
    if len(feasible):
        lo, hi = feasible.min(axis=0), feasible.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        ok = violation <= 0
        rewards[ok] = -np.max(weight * (F[ok] - lo) / span, axis=1)
    return rewards


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
