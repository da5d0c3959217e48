"""Differentiable hardware-aware search (DARTS / GDAS / ProxylessNAS relaxations) on a trained
weight-sharing supernet, with the calibrated latency table as an exact, differentiable penalty.

Architecture parameters are logits over every elastic choice: the depth of each stage, the kernel
and expand ratio of each block slot, and the input resolution. They are trained by gradient
descent on a held-out part of the training images, alternating with the supernet's weights on
the rest (the weights are fine-tuned in memory only: the accuracy estimates and the export use the
checkpoint as trained, like every other strategy).

Relaxations (how a forward pass runs the distribution):
- ``darts``: every path at once, weighted by its probability (kernel x expand per block, a
  probability-weighted sum over depths); memory grows with the number of paths.
- ``gdas``: one path per choice, sampled by Gumbel-softmax with hard one-hot samples and a
  straight-through gradient to every logit.
- ``proxyless``: binarised paths: two candidates per choice drawn by their probabilities, one made
  active by its renormalised probability, the gradient through both (ProxylessNAS's two-path
  estimate of BinaryConnect).
The resolution is sampled per batch in every mode (a batch has one size).

The latency term is the expected latency under the distribution, E[lat] = intercept + sum over block
slots of P(slot in use) x sum over (kernel, expand) of p_k p_e cost(op key), with the stem and head
costs constant and each resolution weighted by its probability. `LatencyPredictor.linear_costs()`
makes this exact for every calibration (scales, per-op overhead, op attributes): on a one-hot
distribution it equals the predictor (before the predictor's floor of a tenth of the raw sum), and
its gradient is autograd's. The loss is CE + lambda * max(0, E[lat] / budget - 1) (the budget form:
no pull below the budget, so the search spends the whole budget on accuracy; FBNet's multiplicative
form pulls every architecture toward lower latency even when it is under budget). lambda is adapted by
dual ascent: multiplied up while the argmax architecture is over budget, down while it is well under.
The final argmax is then moved into the lower half of the band [budget * (1 - band), budget] along the
distribution (the cheapest-in-probability downgrades while over, the most probable upgrades while
under), so a prediction error of up to half the band still lands the measured latency in the band.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import InputError

RELAXATIONS = ("darts", "gdas", "proxyless")
# darts runs every path of every block at once; refuse above this many path activations per image
# (kernel x expand variants x blocks x resolution^2 x width); gdas / proxyless run one or two
DARTS_MAX_ACTIVATION_MB = 2048


@dataclass
class DifferentiableSettings:
    relaxation: str = "gdas"
    steps: int = 150  # alternating (weight step, architecture step) pairs
    batch_size: int = 64
    arch_lr: float = 0.05
    weight_lr: float = 0.002  # fine-tuning the shared weights to the distribution (0: frozen)
    lambda_init: float = 2.0
    lambda_growth: float = 1.15  # dual ascent: lambda *= growth while the argmax is over budget
    band: float = 0.1  # the final architecture lands in [budget * (1 - band), budget] where it can
    tau: float = 1.0  # Gumbel-softmax temperature (gdas)
    arch_fraction: float = 0.2  # of the training images (outside the validation split) for the arch steps
    seed: int = 0
    progress: bool = True

    def validate(self) -> None:
        if self.relaxation not in RELAXATIONS:
            raise InputError(f"unknown relaxation {self.relaxation!r}; expected one of {', '.join(RELAXATIONS)}",
                             field="relaxation")
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"must be a positive integer, got {value!r}", field=name)
        for name in ("arch_lr", "lambda_init", "tau"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise InputError(f"must be a positive number, got {value!r}", field=name)
        if not math.isfinite(self.weight_lr) or self.weight_lr < 0:
            raise InputError(f"must be a number >= 0, got {self.weight_lr!r}", field="weight_lr")
        if not self.lambda_growth > 1:
            raise InputError(f"must be above 1, got {self.lambda_growth!r}", field="lambda_growth")
        if not 0 <= self.band < 1:
            raise InputError(f"must be in [0, 1), got {self.band!r}", field="band")
        if not 0 < self.arch_fraction < 1:
            raise InputError(f"must be in (0, 1), got {self.arch_fraction!r}", field="arch_fraction")


class ArchDistribution(nn.Module):
    """Independent categorical distributions over the elastic choices of an ElasticMobileNetSpace."""

    def __init__(self, space: Any):
        super().__init__()
        self.space = space
        self.resolutions = tuple(space.resolutions)
        self.depths, self.kernels, self.expands = tuple(space.depths), tuple(space.kernels), tuple(space.expands)
        self.r = nn.Parameter(torch.zeros(len(self.resolutions)))
        self.d = nn.Parameter(torch.zeros(space.n_stages, len(self.depths)))
        self.k = nn.Parameter(torch.zeros(space.n_slots, len(self.kernels)))
        self.e = nn.Parameter(torch.zeros(space.n_slots, len(self.expands)))

    def probs(self) -> dict[str, torch.Tensor]:
        return {name: F.softmax(getattr(self, name), dim=-1) for name in ("r", "d", "k", "e")}

    def argmax_arch(self) -> dict:
        pick = {name: getattr(self, name).detach().argmax(dim=-1).tolist() for name in ("r", "d", "k", "e")}
        return self.space.validate({
            "r": self.resolutions[pick["r"]], "d": [self.depths[i] for i in pick["d"]],
            "k": [self.kernels[i] for i in pick["k"]], "e": [self.expands[i] for i in pick["e"]]})

    def set_one_hot(self, arch: dict, scale: float = 30.0) -> None:
        """Logits that put (almost) all mass on `arch`."""
        arch = self.space.validate(arch)
        with torch.no_grad():
            for name, choices, values in (("r", self.resolutions, [arch["r"]]), ("d", self.depths, arch["d"]),
                                          ("k", self.kernels, arch["k"]), ("e", self.expands, arch["e"])):
                logits = getattr(self, name).view(-1, len(choices))
                logits.zero_()
                for row, v in enumerate(values):
                    logits[row, choices.index(v)] = scale


class ExpectedLatency(nn.Module):
    """E[latency] under an ArchDistribution, from a LatencyPredictor's exact linear form."""

    def __init__(self, predictor: Any, space: Any):
        super().__init__()
        from hwnas.space.mbv3 import MAX_DEPTH

        intercept, costs = predictor.linear_costs()
        self.intercept = float(intercept)
        self.max_depth = MAX_DEPTH

        def cost(key: str) -> float:
            if key not in costs:
                raise InputError(f"op key {key!r} is not in the latency table; complete it with "
                                 "`hwnas profile ... --resume`", path=predictor.table.path, field="entries")
            return costs[key]

        fixed, slots = [], []
        for r in space.resolutions:
            fixed.append(sum(cost(k) for k in space.fixed_ops(r)))
            slots.append([[[cost(space.slot_op(r, m, k, e)) for e in space.expands] for k in space.kernels]
                          for m in range(space.n_slots)])
        self.register_buffer("fixed", torch.tensor(fixed, dtype=torch.float64))  # (R,)
        self.register_buffer("slots", torch.tensor(slots, dtype=torch.float64))  # (R, slots, K, E)
        # slot j of a stage is in use when the stage's depth exceeds j: (depth choices, MAX_DEPTH)
        uses = [[1.0 if j < d else 0.0 for j in range(MAX_DEPTH)] for d in space.depths]
        self.register_buffer("uses", torch.tensor(uses, dtype=torch.float64))

    def forward(self, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        p_r, p_d = probs["r"].double(), probs["d"].double()
        p_k, p_e = probs["k"].double(), probs["e"].double()
        active = (p_d @ self.uses).reshape(-1)  # (slots,): P(slot in use)
        per_slot = torch.einsum("rske,sk,se->rs", self.slots, p_k, p_e)  # (R, slots)
        per_resolution = self.fixed + per_slot @ active
        return self.intercept + p_r @ per_resolution


def _weights(logits: torch.Tensor, relaxation: str, tau: float, generator: torch.Generator) -> torch.Tensor:
    """Path weights for one choice (last axis): soft probabilities (darts), a hard Gumbel-softmax sample
    with straight-through gradient (gdas), or a binary gate over two sampled candidates (proxyless)."""
    probs = F.softmax(logits, dim=-1)
    if relaxation == "darts":
        return probs
    if relaxation == "gdas":
        u = torch.rand(logits.shape, generator=generator).clamp_(1e-9, 1 - 1e-9)
        soft = F.softmax((logits - torch.log(-torch.log(u))) / tau, dim=-1)
        hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
        return hard - soft.detach() + soft
    # proxyless: two candidates by probability, one active by their renormalised probability
    flat = probs.detach().reshape(-1, logits.shape[-1])
    n = logits.shape[-1]
    pair = torch.multinomial(flat, 2, replacement=False, generator=generator) if n > 1 else torch.zeros(
        flat.shape[0], 1, dtype=torch.long)
    pair = pair.reshape(*logits.shape[:-1], -1)
    mask = torch.zeros_like(probs).scatter_(-1, pair, 1.0)
    masked = logits.masked_fill(mask == 0, float("-inf"))
    q = F.softmax(masked, dim=-1)
    active = torch.multinomial(q.detach().reshape(-1, n), 1, generator=generator).reshape(*logits.shape[:-1])
    hard = F.one_hot(active, n).to(q.dtype)
    return hard - q.detach() + q


class RelaxedSupernet(nn.Module):
    """Runs a Supernet under path weights: each block a weighted sum of its (kernel, expand) variants
    with non-zero weight, each stage a weighted sum of its outputs after each depth."""

    def __init__(self, supernet: Any):
        super().__init__()
        self.net = supernet

    def forward(self, x: torch.Tensor, w_d: torch.Tensor, w_k: torch.Tensor, w_e: torch.Tensor) -> torch.Tensor:
        from hwnas.space.mbv3 import MAX_DEPTH

        net = self.net
        x = net.first_block(net.stem(x))
        depths = net.space.depths
        for s, stage in enumerate(net.stages):
            needed = max(d for d, w in zip(depths, w_d[s].detach().tolist(), strict=True) if w != 0)
            out = 0
            for j in range(needed):
                x = self._block(stage[j], x, w_k[s * MAX_DEPTH + j], w_e[s * MAX_DEPTH + j])
                for i, d in enumerate(depths):
                    if d == j + 1 and float(w_d[s, i].detach()) != 0:
                        out = out + w_d[s, i] * x
            x = out
        return net.classifier(net.feature_mix(net.pool(net.final_expand(x))))

    @staticmethod
    def _block(block: Any, x: torch.Tensor, w_k: torch.Tensor, w_e: torch.Tensor) -> torch.Tensor:
        out = 0
        for ki, k in enumerate(block.kernels):
            if float(w_k[ki].detach()) == 0:
                continue
            for ei, e in enumerate(block.expands):
                if float(w_e[ei].detach()) == 0:
                    continue
                block.set_active(k, e)
                out = out + (w_k[ki] * w_e[ei]) * block(x)
        return out


@dataclass
class BudgetRun:
    budget_ms: float
    arch: dict
    predicted_ms: float
    expected_ms: float  # E[lat] of the final distribution
    lambda_final: float
    seconds: float
    repaired: list[str] = field(default_factory=list)  # the moves that brought the argmax into the band

    def to_dict(self) -> dict[str, Any]:
        return {"budget_ms": self.budget_ms, "arch": self.arch, "predicted_ms": self.predicted_ms,
                "expected_ms": self.expected_ms, "lambda_final": self.lambda_final, "seconds": self.seconds,
                "repaired": self.repaired}


def _estimate_darts_memory_mb(space: Any, batch: int) -> float:
    """Activations kept by darts: every (kernel, expand) variant of every block slot at the largest
    resolution, expanded width, float32 (a rough upper bound, for the refusal only)."""
    r = max(space.resolutions)
    sizes = space.stage_sizes(r)
    total = 0.0
    for s in range(space.n_stages):
        width = space.stage_widths[s]
        for _ in range(space.n_slots // space.n_stages):
            total += sum(3 * width * e * sizes[s] ** 2 for e in space.expands) * len(space.kernels)
    return total * batch * 4 / 2**20


def differentiable_search(supernet: Any, meta: dict, predictor: Any, budget_ms: float,
                          settings: DifferentiableSettings | None = None, data: Any = None) -> BudgetRun:
    """One differentiable search run: the architecture for `budget_ms` on the supernet's space."""
    from hwnas.data import load_dataset
    from hwnas.supernet import resize_input
    from hwnas.train import split_validation
    from hwnas.train.trainer import TrainSettings

    settings = settings or DifferentiableSettings()
    settings.validate()
    if not math.isfinite(budget_ms) or budget_ms <= 0:
        raise InputError(f"must be a positive number of milliseconds, got {budget_ms}", field="budget_ms")
    space = supernet.space
    if not all(hasattr(space, a) for a in ("depths", "kernels", "expands", "slot_op", "fixed_ops", "stage_sizes")):
        raise InputError(f"space '{space.name}' has no elastic depth / kernel / expand choices to relax",
                         field="space")
    if settings.relaxation == "darts":
        mb = _estimate_darts_memory_mb(space, settings.batch_size)
        if mb > DARTS_MAX_ACTIVATION_MB:
            raise InputError(f"darts keeps every path's activations: about {mb:.0f} MB at batch "
                             f"{settings.batch_size} (> {DARTS_MAX_ACTIVATION_MB} MB); use gdas or proxyless, or "
                             "a smaller batch", field="relaxation")
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    train_settings = TrainSettings.from_dict(meta.get("settings", {}))
    data = data if data is not None else load_dataset(train_settings.data)
    train_settings.resolve_val_size(len(data.train_y))
    train_part, _ = split_validation(data, train_settings.val_size, seed=train_settings.seed)
    n_arch = max(settings.batch_size, int(len(train_part.train_y) * settings.arch_fraction))
    weight_part, arch_part = split_validation(train_part, n_arch, seed=settings.seed + 17)

    dist = ArchDistribution(space)
    expected = ExpectedLatency(predictor, space)
    relaxed = RelaxedSupernet(supernet).train()
    arch_opt = torch.optim.Adam(dist.parameters(), lr=settings.arch_lr, betas=(0.5, 0.999))
    weight_opt = (torch.optim.SGD(supernet.parameters(), lr=settings.weight_lr, momentum=0.9)
                  if settings.weight_lr > 0 else None)
    lam = settings.lambda_init

    def batches(part: Any, split: str):
        while True:
            yield from part.batches(split, settings.batch_size, shuffle=True, generator=gen, augment=True)

    # weights on the remaining training images, architecture on the held-out ones (the validation split
    # that estimates accuracy for search and export is in neither)
    w_iter, a_iter = batches(weight_part, "train"), batches(arch_part, "test")

    def loss_on(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = dist.probs()
        w_r = _weights(dist.r, "gdas", settings.tau, gen)  # one resolution per batch in every mode
        ri = int(w_r.detach().argmax())
        w = [_weights(getattr(dist, n), settings.relaxation, settings.tau, gen) for n in ("d", "k", "e")]
        logits = w_r[ri] * relaxed(resize_input(x, dist.resolutions[ri]), *w)
        return F.cross_entropy(logits, y), expected(probs)

    for step in range(settings.steps):
        if weight_opt is not None:
            x, y = next(w_iter)
            ce, _ = loss_on(x, y)
            weight_opt.zero_grad(set_to_none=True)
            ce.backward()
            weight_opt.step()
        x, y = next(a_iter)
        ce, e_lat = loss_on(x, y)
        penalty = torch.clamp(e_lat / budget_ms - 1.0, min=0.0)
        loss = ce + lam * penalty.float()
        arch_opt.zero_grad(set_to_none=True)
        if weight_opt is not None:
            weight_opt.zero_grad(set_to_none=True)
        loss.backward()
        arch_opt.step()
        # dual ascent on lambda: judged on the architecture the run would return now
        predicted = float(predictor.predict([dist.argmax_arch()])[0])
        if predicted > budget_ms:
            lam *= settings.lambda_growth
        elif predicted < budget_ms * (1 - settings.band):
            lam = max(settings.lambda_init * 1e-3, lam / settings.lambda_growth)
        if settings.progress and (step % 25 == 0 or step == settings.steps - 1):
            print(f"differentiable ({settings.relaxation}) {budget_ms:g} ms: step {step + 1}/{settings.steps}  "
                  f"ce {float(ce):.3f}  E[lat] {float(e_lat):.4g} ms  argmax {predicted:.4g} ms  lambda {lam:.3g}",
                  file=sys.stderr, flush=True)
    arch, moves = project_to_budget(dist, predictor, budget_ms, settings.band)
    with torch.no_grad():
        e_final = float(expected(dist.probs()))
    return BudgetRun(budget_ms=float(budget_ms), arch=arch, predicted_ms=float(predictor.predict([arch])[0]),
                     expected_ms=e_final, lambda_final=lam, seconds=round(time.perf_counter() - started, 2),
                     repaired=moves)


def project_to_budget(dist: ArchDistribution, predictor: Any, budget_ms: float, band: float) -> tuple[dict, list]:
    """The argmax architecture moved into the lower half of the band, [budget * (1 - band), budget *
    (1 - band / 2)], one choice at a time: while above it, the change to a cheaper choice that loses the
    least log-probability per ms saved; while below it, the change to a dearer choice that loses the
    least log-probability and stays under its top. Aiming at the band's middle leaves half the band for
    the predictor's error either way, so the measured latency lands in [budget * (1 - band), budget]
    when the prediction is within band / 2 of it. Stops when no single change helps (a budget below the
    fastest subnet stays over)."""
    space = dist.space
    logp = {name: F.log_softmax(getattr(dist, name).detach(), dim=-1) for name in ("r", "d", "k", "e")}
    choices = {"r": dist.resolutions, "d": dist.depths, "k": dist.kernels, "e": dist.expands}
    arch = dist.argmax_arch()
    moves: list[str] = []

    def neighbours(a: dict):
        for name in ("r", "d", "k", "e"):
            values = [a["r"]] if name == "r" else a[name]
            for row, v in enumerate(values):
                if name in ("k", "e") and not space._active(a["d"], row):
                    continue
                for c, option in enumerate(choices[name]):
                    if option == v:
                        continue
                    b = {"r": a["r"], "d": list(a["d"]), "k": list(a["k"]), "e": list(a["e"])}
                    if name == "r":
                        b["r"] = option
                    else:
                        b[name][row] = option
                    cost = float(logp[name].view(-1, len(choices[name]))[row, choices[name].index(v)]
                                 - logp[name].view(-1, len(choices[name]))[row, c])
                    yield f"{name}[{row}] {v}->{option}", space.validate(b), cost

    low, top = budget_ms * (1 - band), budget_ms * (1 - band / 2)
    for _ in range(200):
        now = float(predictor.predict([arch])[0])
        if low <= now <= top:
            break
        cands = list(neighbours(arch))
        lat = predictor.predict([b for _, b, _ in cands])
        if now > top:
            scored = [(c / (now - t), m, b) for (m, b, c), t in zip(cands, lat, strict=True) if t < now]
        else:
            scored = [(c, m, b) for (m, b, c), t in zip(cands, lat, strict=True) if now < t <= top]
        if not scored:
            break
        _, move, arch = min(scored, key=lambda s: s[0])
        moves.append(move)
    return arch, moves


def sweep_budgets(budget_ms: float, n: int) -> list[float]:
    """`n` budgets for a one-shot front, the given budget the largest: budget x (1 - 0.4 i / max(1, n - 1))."""
    if n < 1:
        raise InputError(f"must be a positive integer, got {n}", field="sweep")
    return [round(budget_ms * (1 - 0.4 * i / max(1, n - 1)), 6) for i in range(n)]
