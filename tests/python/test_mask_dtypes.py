"""The one mask policy (cpp/include/grpokit/math/strided.hpp, math::kFlagDTypes): every op that takes a
mask accepts bool, uint8, int8, int32, int64, float32 and float64 masks, and any nonzero value marks a
valid position (masks select, never multiply). Each op's result with such a mask is its result with the
bool mask, bit for bit; another dtype is refused with an error naming the mask."""

import dataclasses

import numpy as np
import pytest

import grpokit
import grpokit.diagnostics as gd

B, T, G = 4, 6, 2
RNG = np.random.default_rng(7)
MASK = np.ones((B, T), dtype=bool)
MASK[0, 4:] = MASK[2, 1:] = MASK[3, ::2] = False
LP = RNG.normal(-1.0, 0.3, (B, T))
OLD = LP + RNG.normal(0.0, 0.2, (B, T))
ADV = np.array([1.0, -1.0, 0.5, -0.5])
IDS = RNG.integers(0, 3, (B, T))

# Nonzero values other than 1 (negative ones included) where the mask is set.
FLAG_VALUES = {
    np.uint8: 255,
    np.int8: -1,
    np.int32: 7,
    np.int64: -5,
    np.float32: 0.5,
    np.float64: -2.0,
}

OPS = {
    "policy_loss": lambda m: grpokit.policy_loss(LP, OLD, ADV, m, spec="trl.grpo", return_weights=True),
    "importance_weights": lambda m: grpokit.importance_weights(LP, OLD, m, level="token", mode="truncate"),
    "clip_region": lambda m: gd.clip_region(np.exp(LP - OLD), ADV, mask=m),
    "loss_decomposition": lambda m: gd.loss_decomposition(
        np.full((B, T), 0.1), ADV, G, ratios=np.exp(LP - OLD), mask=m
    ),
    "prefix_bias_from_weights": lambda m: gd.prefix_bias_from_weights(IDS, ADV, np.full((B, T), 0.2), G, mask=m),
}


def values(r):
    """A result's fields as a flat list of arrays (dataclasses, named tuples and plain tuples)."""
    if dataclasses.is_dataclass(r):
        r = [getattr(r, f.name) for f in dataclasses.fields(r)]
    elif isinstance(r, tuple):
        r = list(r)
    out = []
    for v in r if isinstance(r, list) else [r]:
        if isinstance(v, dict):
            out += [np.asarray(v[k]) for k in sorted(v)]
        elif v is not None and not isinstance(v, str):
            out.append(np.asarray(v))
    return out


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("dtype", list(FLAG_VALUES), ids=lambda d: np.dtype(d).name)
def test_every_flag_dtype_selects_like_bool(op, dtype):
    want = values(OPS[op](MASK))
    got = values(OPS[op](np.where(MASK, FLAG_VALUES[dtype], 0).astype(dtype)))
    assert len(got) == len(want) > 0
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("op", sorted(OPS))
def test_other_mask_dtypes_are_refused(op):
    with pytest.raises(TypeError, match="mask"):
        OPS[op](MASK.astype(np.complex64))
