"""Benchmark: grpokit.jax inside a jitted JAX step against the same math in jnp under jax.jit (CPU).

Loss (loss + gradient w.r.t. logp, one jitted value_and_grad):
  grpokit   grpokit.jax.policy_loss(spec="trl.grpo", beta=0.04, kl_is_corrected=False): one XLA FFI call
  jnp       the GRPO loss as JAX trainers write it (tunix's formulation): ratio, PPO clip, k3 KL,
            per-sequence token mean, batch mean; XLA fuses it
Log-probabilities (forward, and forward + backward of logp.sum() + entropy.sum()):
  grpokit   grpokit.jax.token_logprobs
  jnp       jax.nn.log_softmax + take_along_axis + the softmax entropy

Both sides are checked to agree before timing. Time is the median of --repeats calls after one warm-up
(which compiles). The lead records the figures in benchmarks/RESULTS.md.

  python benchmarks/bench_jax.py                                  # 64x2048, 256x4096; 2048x32000
  python benchmarks/bench_jax.py --loss-shapes 4x16 --logprob-shapes 8x64 --repeats 2   # smoke run
"""

from __future__ import annotations

import argparse
import platform

import jax
import jax.numpy as jnp
import numpy as np

import grpokit.jax as gkj
from timing import median_time

EPSILON, BETA = 0.2, 0.04


def jnp_grpo_loss(logp, old_logp, ref_logp, advantages, mask):
    """GRPO as tunix writes it: PPO clip on the token ratio, k3 KL to the reference, the per-sequence
    masked token mean, then the batch mean (the trl.grpo preset with beta and the plain k3 KL)."""
    ratio = jnp.exp(logp - old_logp)
    adv = advantages[:, None]
    per_token = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - EPSILON, 1 + EPSILON) * adv)
    d = ref_logp - logp
    per_token = per_token + BETA * (jnp.exp(d) - d - 1)
    per_seq = (per_token * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1)
    return per_seq.mean()


def grpokit_loss(logp, old_logp, ref_logp, advantages, mask):
    return gkj.policy_loss(
        logp, old_logp, advantages, mask, spec="trl.grpo", ref_logp=ref_logp, beta=BETA, kl_is_corrected=False
    ).loss


def jnp_logprobs(logits, ids):
    z = jax.nn.log_softmax(logits, axis=-1)
    logp = jnp.take_along_axis(z, ids[:, None], axis=-1)[:, 0]
    return logp, -(jnp.exp(z) * z).sum(-1)


def grpokit_logprobs(logits, ids):
    return tuple(gkj.token_logprobs(logits, ids))


def shape(text: str):
    a, b = text.lower().split("x")
    return int(a), int(b)


def bench_loss(B: int, T: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    lp = np.log(rng.uniform(0.05, 0.95, (B, T))).astype(np.float32)
    args = (
        lp,
        (lp + rng.normal(0, 0.1, (B, T))).astype(np.float32),
        (lp + rng.normal(0, 0.1, (B, T))).astype(np.float32),
        rng.normal(size=B).astype(np.float32),
        (np.arange(T)[None, :] < rng.integers(1, T + 1, B)[:, None]).astype(np.float32),
    )
    args = tuple(jnp.asarray(x) for x in args)  # on the device already, as in a training step
    fns = {name: jax.jit(jax.value_and_grad(f)) for name, f in (("grpokit", grpokit_loss), ("jnp", jnp_grpo_loss))}
    (l1, g1), (l2, g2) = fns["grpokit"](*args), fns["jnp"](*args)
    np.testing.assert_allclose(float(l1), float(l2), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-3, atol=1e-7)
    return {name: median_time(lambda f=f: jax.block_until_ready(f(*args)), repeats) for name, f in fns.items()}


def bench_logprobs(N: int, V: int, repeats: int, backward: bool) -> dict:
    rng = np.random.default_rng(1)
    args = (rng.normal(size=(N, V)).astype(np.float32), rng.integers(0, V, N).astype(np.int32))
    args = tuple(jnp.asarray(x) for x in args)  # a host → device copy per call would dominate the time
    fns = {}
    for name, f in (("grpokit", grpokit_logprobs), ("jnp", jnp_logprobs)):
        if backward:
            f = jax.grad(lambda x, ids, f=f: sum(v.sum() for v in f(x, ids)))
        fns[name] = jax.jit(f)
    a, b = jax.tree.leaves(fns["grpokit"](*args)), jax.tree.leaves(fns["jnp"](*args))
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
    return {name: median_time(lambda f=f: jax.block_until_ready(f(*args)), repeats) for name, f in fns.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loss-shapes", nargs="*", default=["64x2048", "256x4096"], help="BxT")
    p.add_argument("--logprob-shapes", nargs="*", default=["2048x32000"], help="NxV")
    p.add_argument("--repeats", type=int, default=10)
    a = p.parse_args()
    print(f"# {platform.processor() or platform.machine()}, jax {jax.__version__}, {jax.devices()[0].platform}")
    print("| what | shape | grpokit ms | jnp ms | speed-up |")
    print("|---|---|---|---|---|")

    def row(what, s, t):
        print(f"| {what} | {s} | {t['grpokit'] * 1e3:.2f} | {t['jnp'] * 1e3:.2f} | {t['jnp'] / t['grpokit']:.2f}x |")

    for s in a.loss_shapes:
        row("loss + grad", s, bench_loss(*shape(s), a.repeats))
    for s in a.logprob_shapes:
        row("logprobs fwd", s, bench_logprobs(*shape(s), a.repeats, False))
        row("logprobs fwd+bwd", s, bench_logprobs(*shape(s), a.repeats, True))


if __name__ == "__main__":
    main()
