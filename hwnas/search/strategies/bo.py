"""Bayesian optimisation with a Gaussian process, multi-objective (batch expected hypervolume improvement).

One GP per objective over the architecture encoding, with an architecture kernel: the
exponential kernel of the Hamming distance between two encodings (how many genes differ;
with a space's `surrogate_genes`, e.g. a cell without its dead edges, those count too),
k(a, b) = exp(-d(a, b) / ell). Targets are the normal scores of the values' ranks, so a
few very poor architectures do not dominate the fit. Each batch refits the GP (the length
scale and noise that maximise the marginal likelihood over a small grid), scores a pool of
unseen candidates (mutants of the current front, random architectures) and picks the batch
one architecture at a time by the hypervolume it is expected to add (each objective's
marginal averaged over Monte Carlo posterior draws, the two taken as independent), each pick
joining the front at its predicted mean before the next.

Why not a library: Optuna's `GPSampler` refits and optimises its acquisition by local
search for every single architecture; on NAS-Bench-201 that is about 2.2 s an
architecture, 90 % of it in the acquisition search (profiled), and it has no batch mode
that saves the work. BoTorch would add a large dependency for the same model. This GP is
a few dozen lines of numpy and refits once per batch. With `engine: optuna` the strategy
runs Optuna's `GPSampler` instead (log expected hypervolume improvement over the genes as
categorical parameters), an optional extra: `pip install 'hwnas[bo]'`.

Constraints: infeasible architectures never join the front the acquisition measures, and
candidates are weighted by the GP's probability of meeting each limit.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy.special import ndtr as _normal_cdf

from hwnas.errors import InputError
from hwnas.search.gp import HammingGP, encodings, normal_scores, score_of, surrogate_views
from hwnas.search.indicators import pareto_front
from hwnas.search.optuna_study import constraint_options, import_optuna, run_study
from hwnas.search.problem import ArchKey, ArchProblem, arch_key
from hwnas.search.strategies.base import SearchBudget, Strategy, register_strategy
from hwnas.search.strategies.pareto_local_search import _greedy_hypervolume
from hwnas.space.base import Arch

DEFAULT_BATCH = 10
DEFAULT_STARTUP = 20
# unseen candidates scored per batch: random ones, and mutants of each front member
_POOL_RANDOM = 1000
_POOL_MUTANTS = 30
# posterior draws averaged by the acquisition
_SAMPLES = 32
_MAX_DRAWS = 200


@register_strategy("bo")
class BayesianOptimisation(Strategy):
    """Options: `pop_size`, architectures per batch (one GP refit each; 10); `startup`, random
    architectures before the GP takes over (20); `engine`: "numpy" (this module's GP, the
    default) or "optuna" (Optuna's GPSampler, one refit per architecture)."""

    multi_objective = True

    def settings(self) -> dict:
        return {"pop_size": self.pop_size or DEFAULT_BATCH, "engine": self.engine(),
                "startup": int(self.options.get("startup", DEFAULT_STARTUP)), **self.options}

    def engine(self) -> str:
        engine = str(self.options.get("engine", "numpy"))
        if engine not in ("numpy", "optuna"):
            raise InputError(f"unknown engine {engine!r}; expected 'numpy' or 'optuna'", field="engine")
        return engine

    def run(self, problem: ArchProblem, budget: SearchBudget, seed: int,
            on_generation: Callable[[], None]) -> None:
        startup = int(self.options.get("startup", DEFAULT_STARTUP))
        batch = int(self.pop_size or DEFAULT_BATCH)
        if self.engine() == "optuna":
            optuna = import_optuna(self.name)
            with warnings.catch_warnings():  # deterministic_objective is marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, deterministic_objective=True,
                                                    **constraint_options(problem, optuna))
            run_study(problem, budget, on_generation, sampler, batch)
            return
        rng = np.random.default_rng(seed)
        space, evaluator = problem.space, problem.evaluator
        archs: list[Arch] = []
        seen: set[ArchKey] = set()

        def evaluate(new: list[Arch]) -> None:
            archs.extend(new)
            seen.update(arch_key(space, a) for a in new)

        first = _unseen(space, rng, [space.sample(rng) for _ in range(4 * startup)], seen, evaluator,
                        int(min(startup, evaluator.remaining)))
        if not first:
            return
        problem.evaluate_archs(first)
        evaluate(first)
        on_generation()
        generation = 1
        while budget.generations_left(generation) and evaluator.remaining > 0:
            F, G = problem.evaluate_archs(archs)  # cached: no new evaluation
            picks = self._batch(problem, rng, archs, F, G, seen, int(min(batch, evaluator.remaining)))
            if not picks:
                break
            problem.evaluate_archs(picks)
            evaluate(picks)
            on_generation()
            generation += 1

    def _batch(self, problem: ArchProblem, rng: np.random.Generator, archs: list[Arch], F: np.ndarray,
               G: np.ndarray, seen: set[ArchKey], count: int) -> list[Arch]:
        space = problem.space
        feasible = np.all(G <= 0, axis=1) if G.size else np.ones(len(F), dtype=bool)
        members = np.flatnonzero(feasible)
        members = members[pareto_front(F[members])] if len(members) else np.flatnonzero(
            (G.clip(0, None).sum(axis=1)) == G.clip(0, None).sum(axis=1).min())
        mutation = 1.0 / len(space.bounds[0])
        offers = [space.sample(rng) for _ in range(_POOL_RANDOM)]
        for i in members:
            offers += [space.mutate(archs[int(i)], rng, mutation) for _ in range(_POOL_MUTANTS)]
        pool = _unseen(space, rng, offers, seen, problem.evaluator, len(offers))
        if not pool:
            return _unseen(space, rng, [space.sample(rng) for _ in range(_MAX_DRAWS)], seen, problem.evaluator,
                           count)
        X_seen, X_pool = encodings(space, archs), encodings(space, pool)
        gp = HammingGP(X_seen, X_pool, surrogate_views(space, X_seen))
        targets = np.hstack([F, G])
        mean, std = gp.posterior(normal_scores(targets))
        # objectives: posterior draws mapped back to values through the evaluated values' quantiles
        z = rng.standard_normal((_SAMPLES, 1, F.shape[1]))
        n_obj = F.shape[1]
        to_values = lambda S: np.stack([np.quantile(F[:, k], _normal_cdf(S[..., k]))  # noqa: E731
                                        for k in range(n_obj)], axis=-1)
        predicted = to_values(mean[:, :n_obj])
        samples = to_values(mean[None, :, :n_obj] + z * std[None, :, :n_obj])
        if G.size:  # probability of meeting every limit: keep candidates likely feasible
            limits = np.array([score_of(G[:, k], 0.0) for k in range(G.shape[1])])
            p_ok = np.prod(_normal_cdf((limits[None] - mean[:, n_obj:]) / std[:, n_obj:]), axis=1)
            likely = p_ok >= 0.5
            if likely.sum() >= count:
                keep = np.flatnonzero(likely)
                pool, predicted, samples = [pool[i] for i in keep], predicted[keep], samples[:, keep]
        known = F[feasible]
        if not len(known) or n_obj != 2:
            order = np.argsort(np.sum([np.argsort(np.argsort(predicted[:, k])) for k in range(n_obj)], axis=0))
            return [pool[int(i)] for i in order[:count]]
        chosen = _greedy_hypervolume(known, predicted, None, count, samples)
        rest = [i for i in np.argsort(samples.min(axis=0).sum(axis=1)) if i not in set(chosen)]
        chosen += [int(i) for i in rest[:count - len(chosen)]]  # nothing adds volume: most optimistic
        return [pool[i] for i in chosen[:count]]


def _unseen(space, rng: np.random.Generator, offers: list[Arch], seen: set[ArchKey], evaluator,
            count: int) -> list[Arch]:
    """Up to `count` distinct offers not evaluated yet, in their order."""
    out, keys = [], set(seen)
    for arch in offers:
        if len(out) >= count:
            break
        key = arch_key(space, arch)
        if key not in keys and not evaluator.knows_key(key):
            keys.add(key)
            out.append(arch)
    return out
