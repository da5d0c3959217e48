"""Architecture -> feature vector for the accuracy predictor.

Elastic MobileNet spaces get OFA's encoding: per block slot a one-hot kernel and a one-hot
expand ratio (all zero when the stage's depth skips the slot), a one-hot depth per stage and a
one-hot resolution. Other spaces: a one-hot of every gene of `space.encode` within its bounds.
"""

from __future__ import annotations

import numpy as np


def is_elastic(space) -> bool:
    return all(hasattr(space, a) for a in ("kernels", "expands", "depths", "resolutions", "n_stages", "n_slots"))


def feature_names(space) -> list[str]:
    if is_elastic(space):
        names = []
        for slot in range(space.n_slots):
            names += [f"k{slot}={k}" for k in space.kernels] + [f"e{slot}={e}" for e in space.expands]
        for s in range(space.n_stages):
            names += [f"d{s}={d}" for d in space.depths]
        return names + [f"r={r}" for r in space.resolutions]
    xl, xu = space.bounds
    return [f"x{i}={v}" for i in range(len(xl)) for v in range(int(xl[i]), int(xu[i]) + 1)]


def has_cost(space) -> bool:
    return callable(getattr(space, "flops", None)) and callable(getattr(space, "params", None))


def cost_features(space, archs: list[dict]) -> np.ndarray:
    """(N, 2) float32: log MACs and log parameters of each subnet (what one-hot codes state only implicitly)."""
    if is_elastic(space) and callable(getattr(space, "slot_op", None)):
        genes = np.stack([space.encode(a) for a in archs]) if archs else np.zeros((0, len(space.bounds[0])), int)
        cost = _elastic_cost(space, genes)
    else:
        cost = np.array([[space.flops(a), space.params(a)] for a in archs], dtype=np.float64).reshape(-1, 2)
    return np.log(np.maximum(cost, 1)).astype(np.float32)


_COST_TABLES: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _cost_tables(space) -> tuple[np.ndarray, np.ndarray]:
    """(fixed[r, 2], slot[r, slot, k, e, 2]): MACs and parameters of the fixed ops and of every
    slot choice, so a population's costs are sums of table entries instead of op-key walks."""
    from hwnas.space.layers import op_macs, op_params

    key = (space.name, repr(sorted(space.config().items())) if hasattr(space, "config") else id(space))
    if key not in _COST_TABLES:
        rs, ks, es = space.resolutions, space.kernels, space.expands
        fixed = np.zeros((len(rs), 2))
        slot = np.zeros((len(rs), space.n_slots, len(ks), len(es), 2))
        for ri, r in enumerate(rs):
            for op in space.fixed_ops(r):
                fixed[ri] += (op_macs(op), op_params(op))
            for m in range(space.n_slots):
                for ki, k in enumerate(ks):
                    for ei, e in enumerate(es):
                        op = space.slot_op(r, m, k, e)
                        slot[ri, m, ki, ei] = (op_macs(op), op_params(op))
        _COST_TABLES[key] = (fixed, slot)
    return _COST_TABLES[key]


def _elastic_cost(space, genes: np.ndarray) -> np.ndarray:
    fixed, slot = _cost_tables(space)
    s, m = space.n_stages, space.n_slots
    per_stage = m // s
    r, d, k, e = genes[:, 0], genes[:, 1 : 1 + s], genes[:, 1 + s : 1 + s + m], genes[:, 1 + s + m :]
    depth = np.asarray(space.depths)[d]
    active = (np.arange(m)[None, :] % per_stage) < np.repeat(depth, per_stage, axis=1)  # (n, m)
    chosen = slot[r[:, None], np.arange(m)[None, :], k, e]  # (n, m, 2)
    return fixed[r] + (chosen * active[..., None]).sum(axis=1)


def arch_features(space, archs: list[dict]) -> np.ndarray:
    """(N, F) float32 features of `archs` (validated by the space's encoding)."""
    genes = np.stack([space.encode(a) for a in archs]) if archs else np.zeros((0, len(space.bounds[0])), int)
    if is_elastic(space):
        return _elastic_features(space, genes)
    xl, xu = space.bounds
    blocks = []
    for i in range(genes.shape[1]):
        width = int(xu[i] - xl[i]) + 1
        blocks.append(np.eye(width, dtype=np.float32)[genes[:, i] - xl[i]])
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(archs), 0), np.float32)


def _elastic_features(space, genes: np.ndarray) -> np.ndarray:
    # gene layout of the elastic spaces: [r, d x n_stages, k x n_slots, e x n_slots] as choice indices
    n, s, m = len(genes), space.n_stages, space.n_slots
    per_stage = m // s
    r, d, k, e = genes[:, 0], genes[:, 1 : 1 + s], genes[:, 1 + s : 1 + s + m], genes[:, 1 + s + m :]
    depth = np.asarray(space.depths)[d]  # (n, s)
    active = (np.arange(m)[None, :] % per_stage) < np.repeat(depth, per_stage, axis=1)  # (n, m)
    nk, ne = len(space.kernels), len(space.expands)
    k_hot = np.eye(nk, dtype=np.float32)[k] * active[..., None]
    e_hot = np.eye(ne, dtype=np.float32)[e] * active[..., None]
    slots = np.concatenate([k_hot, e_hot], axis=2).reshape(n, -1)
    d_hot = np.eye(len(space.depths), dtype=np.float32)[d].reshape(n, -1)
    r_hot = np.eye(len(space.resolutions), dtype=np.float32)[r]
    return np.concatenate([slots, d_hot, r_hot], axis=1).astype(np.float32)


def ordinal_names(space) -> list[str]:
    """Names of `ordinal_features` columns (elastic spaces only)."""
    s, m = space.n_stages, space.n_slots
    return (["r", "depth"] + [f"d{i}" for i in range(s)] + [f"ksum{i}" for i in range(s)]
            + [f"esum{i}" for i in range(s)] + [f"k{j}" for j in range(m)] + [f"e{j}" for j in range(m)])


def ordinal_features(space, archs: list[dict]) -> np.ndarray:
    """(N, F) float32 of an elastic space: the choices as numbers rather than categories, so that
    "more" of something is one direction the predictor can learn from few samples: resolution, total
    depth, depth per stage, per stage the sum of the used blocks' kernel sizes and expand ratios, and
    per block slot its kernel size and expand ratio (0 where the stage's depth skips the slot)."""
    if not is_elastic(space):
        raise ValueError(f"ordinal features need an elastic MobileNet space, not {getattr(space, 'name', space)!r}")
    genes = np.stack([space.encode(a) for a in archs]) if archs else np.zeros((0, len(space.bounds[0])), int)
    s, m = space.n_stages, space.n_slots
    per_stage = m // s
    r = np.asarray(space.resolutions, dtype=np.float32)[genes[:, 0]]
    depth = np.asarray(space.depths, dtype=np.float32)[genes[:, 1 : 1 + s]]  # (n, s)
    active = (np.arange(m)[None, :] % per_stage) < np.repeat(depth, per_stage, axis=1)
    k = np.asarray(space.kernels, dtype=np.float32)[genes[:, 1 + s : 1 + s + m]] * active
    e = np.asarray(space.expands, dtype=np.float32)[genes[:, 1 + s + m :]] * active
    n = len(genes)
    ksum, esum = k.reshape(n, s, per_stage).sum(2), e.reshape(n, s, per_stage).sum(2)
    return np.concatenate([r[:, None], depth.sum(1, keepdims=True), depth, ksum, esum, k, e],
                          axis=1).astype(np.float32)


def extreme_names(space) -> list[str]:
    """Names of `extreme_features` columns (elastic spaces only)."""
    base = []
    for end in ("small", "large"):
        base += [f"{end}:d", f"{end}:k", f"{end}:e"]
    for end in ("small", "large"):
        base += [f"{end}:k{s}" for s in range(space.n_stages)] + [f"{end}:e{s}" for s in range(space.n_stages)]
    return base + [f"r={r}*{n}" for r in space.resolutions for n in base]


def extreme_features(space, archs: list[dict]) -> np.ndarray:
    """(N, F) float32 of an elastic space: how much of a subnet is the smallest and how much the
    largest subnet, the two that the sandwich rule trains at every step (a subnet that shares more
    of its choices with one of them has better-trained weights): the share of stages whose depth,
    and of used blocks whose kernel and whose expand ratio, equals the smallest's, the same per
    stage, the same for the largest, and all of these once more for each resolution (zero at the
    other resolutions: closeness to the small end helps at low resolution, to the large end at high)."""
    if not is_elastic(space):
        raise ValueError(f"extreme features need an elastic MobileNet space, not {getattr(space, 'name', space)!r}")
    genes = np.stack([space.encode(a) for a in archs]) if archs else np.zeros((0, len(space.bounds[0])), int)
    n, s, m = len(genes), space.n_stages, space.n_slots
    per_stage = m // s
    d, k, e = genes[:, 1 : 1 + s], genes[:, 1 + s : 1 + s + m], genes[:, 1 + s + m :]
    depth = np.asarray(space.depths)[d]
    active = ((np.arange(m)[None, :] % per_stage) < np.repeat(depth, per_stage, axis=1)).reshape(n, s, per_stage)
    used = np.maximum(active.sum(axis=2), 1)  # (n, s)
    whole, stages = [], []
    for end in (space.smallest(), space.largest()):
        ref = space.encode(end)
        same_k = (k == ref[1 + s : 1 + s + m]).reshape(n, s, per_stage) & active
        same_e = (e == ref[1 + s + m :]).reshape(n, s, per_stage) & active
        total = np.maximum(active.sum(axis=(1, 2)), 1)
        whole += [(d == ref[1 : 1 + s]).mean(axis=1), same_k.sum(axis=(1, 2)) / total,
                  same_e.sum(axis=(1, 2)) / total]
        stages += [same_k.sum(axis=2) / used, same_e.sum(axis=2) / used]
    base = np.concatenate([np.stack(whole, axis=1)] + stages, axis=1)
    r_hot = np.eye(len(space.resolutions))[genes[:, 0]]
    by_r = (r_hot[:, :, None] * base[:, None, :]).reshape(n, -1)
    return np.concatenate([base, by_r], axis=1).astype(np.float32)


def by_resolution_features(space, archs: list[dict]) -> np.ndarray:
    """(N, R * F) float32 of an elastic space: the one-hot code (`arch_features`) once per resolution,
    zero at the other resolutions, so a linear model on it is a separate additive model per resolution
    (a block choice that helps at one resolution may hurt at another)."""
    if not is_elastic(space):
        raise ValueError(f"by-resolution features need an elastic MobileNet space, not "
                         f"{getattr(space, 'name', space)!r}")
    code = arch_features(space, archs)
    r_hot = code[:, -len(space.resolutions) :]
    return (r_hot[:, :, None] * code[:, None, :]).reshape(len(code), -1).astype(np.float32)
