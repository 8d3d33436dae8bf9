"""The catalogue of bad inputs: every public op, the exact exception type and a message fragment.

One table, so the error contract is visible in one place (its torch rows, which need torch, in
test_bad_input_torch.py). Messages name the argument, what it got and what was expected. Ops that land
later add their rows here.
"""

from functools import partial

import numpy as np
import pytest

import bad_input_rows
import grpokit
from dlpack_fakes import DLPackOnly, FakeProducer

B, T = 2, 3
LP = -np.ones((B, T))
ADV = np.array([1.0, -1.0])
MASK = np.ones((B, T), bool)
IDS = np.array([[1, 2, 3], [1, 2, 4]])


def _torch():
    return pytest.importorskip("torch")


def _sgd():
    torch = _torch()
    return torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1)


def _fresh_adamw():
    torch = _torch()
    return torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))], lr=0.1)


D = grpokit.diagnostics
S = grpokit.stationary


CATALOGUE = [
    # ---- advantages ----
    (
        "advantages: uneven groups",
        lambda: grpokit.advantages([1.0, 2.0, 3.0], group_size=2),
        ValueError,
        "group_size: the batch of 3 rewards",
    ),
    (
        "advantages: group of one with std",
        lambda: grpokit.advantages([1.0, 2.0], group_size=1, std="sample"),
        ValueError,
        "at least 2 completions",
    ),
    (
        "advantages: inf reward",
        lambda: grpokit.advantages([1.0, np.inf], group_size=2),
        ValueError,
        "rewards: element 1 is inf",
    ),
    (
        "advantages: float16 rewards",
        lambda: grpokit.advantages(np.ones(2, np.float16), group_size=2),
        TypeError,
        "rewards: expected dtype float32, float64, got float16",
    ),
    (
        "advantages: empty",
        lambda: grpokit.advantages([], group_size=2),
        ValueError,
        "rewards: expected at least one reward",
    ),
    (
        "advantages: ids length",
        lambda: grpokit.advantages([1.0, 2.0], group_ids=[0, 0, 1]),
        ValueError,
        "group_ids: expected shape (2,)",
    ),
    (
        "advantages: float ids",
        lambda: grpokit.advantages([1.0, 2.0], group_ids=[0.5, 1.5]),
        TypeError,
        "group_ids: expected int64",
    ),
    (
        "advantages: unknown std",
        lambda: grpokit.advantages([1.0, 2.0], group_size=2, std="bessel"),
        ValueError,
        "std: expected one of",
    ),
    (
        "advantages: negative epsilon",
        lambda: grpokit.advantages([1.0, 2.0], group_size=2, epsilon=-1.0),
        ValueError,
        "epsilon",
    ),
    (
        "advantages: unknown estimator",
        lambda: grpokit.advantages([1.0, 2.0], 2, estimator="ppo"),
        ValueError,
        "estimator: expected one of",
    ),
    (
        "advantages: reward weights",
        lambda: grpokit.advantages(np.ones((4, 2)), 2, reward_weights=[1.0, 2.0, 3.0]),
        ValueError,
        "reward_weights: expected 2 weights",
    ),
    (
        "advantages: rloo group of one",
        lambda: grpokit.advantages([1.0, 2.0], 1, estimator="rloo"),
        ValueError,
        "single completion",
    ),
    (
        "advantages: not an array",
        lambda: grpokit.advantages({"a": 1}, group_size=2),
        TypeError,
        "rewards: expected a NumPy array",
    ),
    # ---- policy_loss ----
    (
        "policy_loss: old_logp shape",
        lambda: grpokit.policy_loss(LP, LP[:, :2], ADV, MASK),
        ValueError,
        "old_logp: expected shape (2, 3)",
    ),
    (
        "policy_loss: advantages shape",
        lambda: grpokit.policy_loss(LP, LP, np.ones(3), MASK),
        ValueError,
        "advantages: expected shape (2,) or (2, 3)",
    ),
    (
        "policy_loss: float16",
        lambda: grpokit.policy_loss(LP.astype(np.float16), LP, ADV, MASK),
        TypeError,
        "logp: expected dtype float32 or float64",
    ),
    (
        "policy_loss: unknown preset",
        lambda: grpokit.policy_loss(LP, LP, ADV, MASK, spec="trl.nope"),
        ValueError,
        "unknown loss preset 'trl.nope'; valid presets:",
    ),
    (
        "policy_loss: negative epsilon",
        lambda: grpokit.policy_loss(LP, LP, ADV, MASK, epsilon=-0.1),
        ValueError,
        "epsilon: expected a value >= 0",
    ),
    (
        "policy_loss: unknown option",
        lambda: grpokit.policy_loss(LP, LP, ADV, MASK, epsilonn=0.1),
        TypeError,
        "unknown loss option 'epsilonn'",
    ),
    (
        "policy_loss: all masked",
        lambda: grpokit.policy_loss(LP, LP, ADV, np.zeros((B, T), bool)),
        ValueError,
        "mask: no valid token",
    ),
    (
        "policy_loss: NaN at a valid position",
        lambda: grpokit.policy_loss(np.where(MASK, np.nan, 0), LP, ADV, MASK),
        ValueError,
        "logp: non-finite value nan at a valid position",
    ),
    (
        "policy_loss: packed must be 1-D",
        lambda: grpokit.policy_loss(LP, LP, ADV, MASK, cu_seqlens=[0, 1, 2]),
        ValueError,
        "logp: packed inputs (cu_seqlens given) must be 1-D",
    ),
    (
        "policy_loss: KL without ref_logp",
        lambda: grpokit.policy_loss(LP, LP, ADV, MASK, spec="paper.grpo_r1"),
        ValueError,
        "ref_logp: required when beta != 0",
    ),
    # ---- token_logprobs ----
    (
        "token_logprobs: id out of range",
        lambda: grpokit.token_logprobs(np.zeros((2, 5)), [0, 7]),
        ValueError,
        "token_ids: row 1 holds 7, outside the vocabulary [0, 5)",
    ),
    (
        "token_logprobs: ids shape",
        lambda: grpokit.token_logprobs(np.zeros((2, 5)), [0, 1, 2]),
        ValueError,
        "token_ids: expected shape (2,)",
    ),
    (
        "token_logprobs: int logits",
        lambda: grpokit.token_logprobs(np.zeros((2, 5), np.int32), [0, 1]),
        TypeError,
        "logits: expected dtype",
    ),
    (
        "linear_token_logprobs: chunk_size beyond int64",
        lambda: grpokit.linear_token_logprobs(np.zeros((2, 3)), np.zeros((5, 3)), [0, 1], chunk_size=10**30),
        ValueError,
        "chunk_size: expected a positive integer",
    ),
    (
        "linear_token_logprobs: chunk_size text",
        lambda: grpokit.linear_token_logprobs(np.zeros((2, 3)), np.zeros((5, 3)), [0, 1], chunk_size="a"),
        ValueError,
        "chunk_size: expected a positive integer, got 'a'",
    ),
    # ---- corrections ----
    (
        "importance_weights: shape",
        lambda: grpokit.importance_weights(np.zeros((2, 3)), np.zeros((2, 2)), np.ones((2, 3))),
        ValueError,
        "sampler_logp: expected shape (2, 3)",
    ),
    (
        "importance_weights: level",
        lambda: grpokit.importance_weights(np.zeros((2, 3)), np.zeros((2, 3)), np.ones((2, 3)), level="word"),
        ValueError,
        "level: expected one of",
    ),
    # ---- diagnostics ----
    (
        "prefix_bias: uneven groups",
        lambda: D.prefix_bias_from_weights(IDS, ADV, np.ones((2, 3)), group_size=3),
        ValueError,
        "group_size: the batch of 2 completions",
    ),
    (
        "prefix_bias: omega shape",
        lambda: D.prefix_bias_from_weights(IDS, ADV, np.ones((2, 2)), group_size=2),
        ValueError,
        "omega: expected shape (2, 3)",
    ),
    (
        "prefix_bias: advantages",
        lambda: D.prefix_bias_from_weights(IDS, np.ones(3), np.ones((2, 3)), group_size=2),
        ValueError,
        "advantages: expected one advantage per completion",
    ),
    (
        "reward_scale: not Adam",
        lambda: D.reward_scale(_sgd()),
        TypeError,
        "optimizer: SGD has no Adam hyper-parameters",
    ),
    (
        "reward_scale: no state yet",
        lambda: D.reward_scale(_fresh_adamw()),
        ValueError,
        "optimizer: AdamW holds no Adam state yet",
    ),
    (
        "clip_region: advantages",
        lambda: D.clip_region(np.ones((2, 3)), np.ones(3)),
        ValueError,
        "advantages: expected one advantage per completion",
    ),
    (
        "clip_region: negative epsilon",
        lambda: D.clip_region(np.ones((2, 3)), np.ones(2), epsilon=-1),
        ValueError,
        "epsilon: expected finite clip widths >= 0",
    ),
    (
        "overshoot_coefficient: T < 2",
        lambda: D.overshoot_coefficient(1, 0, betas=(0.9, 0.99)),
        ValueError,
        "T: expected an integer >= 2",
    ),
    (
        "any op: a foreign array on a GPU",
        lambda: grpokit.advantages(FakeProducer(np.array([1.0, 0.0]), device_type=2), group_size=2),
        ValueError,
        "pass torch or CuPy arrays on the GPU",
    ),
    # ---- stationary ----
    (
        "stationary: beta 0",
        lambda: S.solve([1, 0, 0], [0.2, 0.3, 0.5], beta=0, G=4),
        ValueError,
        "beta: expected a finite value > 0",
    ),
    (
        "stationary: pi_ref sum",
        lambda: S.solve([1, 0, 0], [0.2, 0.3, 0.4], beta=0.5, G=4),
        ValueError,
        "pi_ref: expected probabilities summing to 1",
    ),
    (
        "stationary: G < 2",
        lambda: S.solve([1, 0, 0], [0.2, 0.3, 0.5], beta=0.5, G=1),
        ValueError,
        "G: expected an integer >= 2",
    ),
    (
        "stationary: lengths",
        lambda: S.solve([1, 0], [0.2, 0.3, 0.5], beta=0.5, G=4),
        ValueError,
        "pi_ref: expected 2 probabilities",
    ),
    # ---- issue 21: counts, coercions, the import layer, double backward (docs/robustness.md) ----
    (
        "policy_loss: negative count",
        lambda: grpokit.policy_loss(LP, LP, ADV, num_items_in_batch=-5),
        ValueError,
        "num_items_in_batch: expected a positive count",
    ),
    (
        "policy_loss: count -1 is not 'unset'",
        lambda: grpokit.policy_loss(LP, LP, ADV, max_completion_length=-1),
        ValueError,
        "max_completion_length: expected a positive count",
    ),
    (
        "policy_loss: fractional group_size",
        lambda: grpokit.policy_loss(LP, LP, ADV, aggregation="prompt_mean", group_size=2.5),
        ValueError,
        "group_size: expected a whole number of rows >= 1",
    ),
    (
        "policy_loss: count beyond 2**53",
        lambda: grpokit.policy_loss(LP, LP, ADV, max_completion_length=2**70),
        ValueError,
        "max_completion_length: expected a count of at most 2**53",
    ),
    (
        "policy_loss: alias named",
        lambda: grpokit.policy_loss(LP, LP, ADV, spec="verl.reinforce", loss_scale_factor=0),
        ValueError,
        "loss_scale_factor (max_completion_length): expected a positive count",
    ),
    (
        "policy_loss: epsilon=None",
        lambda: grpokit.policy_loss(LP, LP, ADV, epsilon=None),
        ValueError,
        "epsilon (epsilon_low): None is not allowed",
    ),
    (
        "policy_loss: text for a number",
        lambda: grpokit.policy_loss(LP, LP, ADV, epsilon="abc"),
        TypeError,
        "epsilon (epsilon_low): expected a number, got the text 'abc'",
    ),
    (
        "policy_loss: huge num_threads",
        lambda: grpokit.policy_loss(LP, LP, ADV, num_threads=10**30),
        ValueError,
        "num_threads: expected a whole number >= 0",
    ),
    (
        "policy_loss: token_weights overflow",
        lambda: grpokit.policy_loss(LP, LP - 0.1, ADV, token_weights=np.full((B, T), 1e308)),
        ValueError,
        "token_weights/advantages: the loss overflowed",
    ),
    (
        "policy_loss: mask of other integers",
        lambda: grpokit.policy_loss(LP, LP, ADV, [[1, 2, 0], [1, 0, 0]]),
        TypeError,
        "mask: expected bool-compatible values",
    ),
    (
        "advantages: fractional group_size",
        lambda: grpokit.advantages([1.0, 2.0, 3.0, 4.0], group_size=2.5),
        TypeError,
        "group_size: expected a whole number >= 1, got 2.5",
    ),
    (
        "advantages: text group_size",
        lambda: grpokit.advantages([1.0, 2.0], group_size="two"),
        TypeError,
        "group_size: expected a whole number >= 1, got 'two'",
    ),
    (
        "advantages: huge group_size",
        lambda: grpokit.advantages([1.0, 2.0], group_size=10**30),
        ValueError,
        "group_size: expected a whole number >= 1",
    ),
    (
        "advantages: text epsilon",
        lambda: grpokit.advantages([1.0, 2.0], group_size=2, epsilon="abc"),
        TypeError,
        "epsilon: expected a number, got 'abc'",
    ),
    (
        "compare: fractional group_size",
        lambda: grpokit.compare(dict(rewards=[1.0, 0.0], group_size=2.5, logp=LP)),
        TypeError,
        "group_size: expected a whole number >= 1, got 2.5",
    ),
    (
        "stationary: huge G",
        lambda: S.solve([1, 0, 0], [0.2, 0.3, 0.5], beta=0.5, G=10**30),
        ValueError,
        "G: expected an integer >= 2 or math.inf",
    ),
    (
        "token_logprobs_backward: stride-0 out",
        lambda: _backward_into(np.lib.stride_tricks.as_strided(np.zeros(3), (2, 3), (0, 8))),
        ValueError,
        "the output has overlapping elements",
    ),
]

# token_logprobs' scalar arguments, all through one call: (argument, value, exception, what the message says)
_LOGPROBS_SCALARS = [
    ("temperature", 0, ValueError, "expected a finite value > 0"),
    ("temperature", "abc", TypeError, "expected a number, got 'abc'"),
    ("temperature", 10**400, ValueError, "expected a number within the float64 range"),
    ("sampler", "hf", ValueError, 'expected "vllm" or "sglang"'),
    ("top_k", 10**30, TypeError, "expected a number or an array of numbers within the int64/float64 range"),
]
CATALOGUE += [
    (
        f"token_logprobs: {arg} {says}",
        partial(grpokit.token_logprobs, np.zeros((2, 5)), [0, 1], **{arg: value}),
        exc,
        f"{arg}: {says}",
    )
    for arg, value, exc, says in _LOGPROBS_SCALARS
]


def _backward_into(out):
    x, ids = np.zeros((2, 3)), [0, 1]
    saved = grpokit.token_logprobs(x, ids)
    return grpokit.token_logprobs_backward(x, ids, saved, saved.logp * 0 + 1, out=out)


@bad_input_rows.parametrize(CATALOGUE)
def test_bad_input(call, exc, fragment):
    bad_input_rows.check(call, exc, fragment)


# ---- NumPy arrays are read without a DLPack capsule (python/bindings/tensor_import.cpp) -------------------


def test_numpy_fast_path_equals_the_dlpack_path():
    rng = np.random.default_rng(0)
    lp = np.log(rng.uniform(0.1, 0.9, (3, 40))).astype(np.float32)[:, ::2]  # strided rows
    old = (lp + 0.1).astype(np.float32)
    A = rng.normal(size=3).astype(np.float32)
    mask = rng.random(lp.shape) < 0.8
    a = grpokit.policy_loss(lp, old, A, mask, spec="trl.grpo")
    b = grpokit.policy_loss(DLPackOnly(lp), DLPackOnly(old), DLPackOnly(A), DLPackOnly(mask), spec="trl.grpo")
    assert float(a.loss) == float(b.loss)
    np.testing.assert_array_equal(a.grad_logp, b.grad_logp)


def test_numpy_arrays_the_fast_path_does_not_take_get_dlpacks_errors():
    lp = np.log(np.full((2, 3), 0.5))
    A = np.array([1.0, -1.0])
    with pytest.raises(ValueError, match="logp: .*native byte order"):
        grpokit.policy_loss(lp.astype(">f8"), lp, A)
    odd32 = np.lib.stride_tricks.as_strided(np.zeros(64, np.float32), shape=(2, 3), strides=(14, 6))
    with pytest.raises(ValueError, match="logp: .*multiple of itemsize"):
        grpokit.policy_loss(odd32, lp.astype(np.float32), A.astype(np.float32))
    ro = lp.copy()
    ro.flags.writeable = False
    assert float(grpokit.policy_loss(ro, ro, A, spec="trl.dapo").loss) == 0.0  # read-only inputs are fine


# ---- what the import layer resolves rather than refuses (issue 21) ----------------------------------


def test_a_list_of_0_1_integers_is_a_mask():
    mask = [[1, 1, 0], [1, 0, 0]]
    a = grpokit.policy_loss(LP, LP - 0.1, ADV, mask)
    b = grpokit.policy_loss(LP, LP - 0.1, ADV, np.array(mask, bool))
    assert float(a.loss) == float(b.loss)
    np.testing.assert_array_equal(a.grad_logp, b.grad_logp)
