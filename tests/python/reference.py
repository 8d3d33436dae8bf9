"""Independent fp64 NumPy references for the engine's ops, written from the formulas in docs/.

Nothing here calls grpokit: these are the oracles the engine is tested against.
"""

from __future__ import annotations

import numpy as np


def group_index(n: int, group_size=None, group_ids=None) -> np.ndarray:
    """Group number of every row: contiguous blocks, or ids in order of first appearance."""
    if group_ids is None:
        return np.arange(n) // group_size
    _, first, inverse = np.unique(np.asarray(group_ids), return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # renumber by first appearance
    return order[inverse]


def advantages(
    rewards, group_size=None, group_ids=None, baseline="mean", std="none", std_scope="group", epsilon=0.0
) -> np.ndarray:
    r = np.asarray(rewards, dtype=np.float64)
    g = group_index(len(r), group_size, group_ids)
    out = np.zeros_like(r)
    ddof = 1 if std == "sample" else 0

    def spread(values):
        values = values[~np.isnan(values)]
        if len(values) - ddof <= 0 or np.all(values == values[0]):
            return 0.0  # a zero-variance group: 0/0 := 0 below
        return float(np.sqrt(np.sum((values - values.mean()) ** 2) / (len(values) - ddof)))

    batch_sigma = spread(r) if std_scope == "batch" else None
    for k in np.unique(g):
        rows = np.where(g == k)[0]
        vals = r[rows]
        ok = ~np.isnan(vals)
        if not ok.any():
            continue
        mean = vals[ok].mean()
        sigma = None if std == "none" else (batch_sigma if std_scope == "batch" else spread(vals))
        for row, v in zip(rows, vals):
            if np.isnan(v):
                continue
            if baseline == "leave_one_out":
                others = [x for x in vals[ok]]
                others.remove(v)
                base = np.mean(others) if others else v
            else:
                base = mean
            centred = v - base
            if sigma is None:
                out[row] = centred
            else:
                out[row] = 0.0 if sigma == 0 else centred / (sigma + epsilon)
    return out
