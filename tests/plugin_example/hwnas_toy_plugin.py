"""A plugin as a third party writes one: a strategy and a backend, registered by entry point only."""

from __future__ import annotations

import numpy as np
import torch

from hwnas.device_profile import THREADS
from hwnas.runtime.backends import Backend, random_input
from hwnas.runtime.runner import CallableRunner
from hwnas.search import Strategy


class ToyRandomSearch(Strategy):
    """Uniform samples, `pop_size` (default 10) per generation."""

    multi_objective = True

    def run(self, problem, budget, seed, on_generation):
        rng = np.random.default_rng(seed)
        generation = 0
        while budget.generations_left(generation) and problem.evaluator.remaining > 0:
            want = int(min(self.pop_size or 10, problem.evaluator.remaining))
            problem.evaluate_archs([problem.space.sample(rng) for _ in range(want)])
            on_generation()
            generation += 1


class ToyEagerBackend(Backend):
    """Times a torch module in eager mode on the CPU, one thread."""

    packages = ("torch",)
    options_schema = {"threads": THREADS}

    def prepare(self, module, input_shape):
        module = module.eval()
        example = random_input(input_shape)

        def call():
            with torch.inference_mode():
                module(example)

        return CallableRunner(call)
