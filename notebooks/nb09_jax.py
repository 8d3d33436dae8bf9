"""Cells of notebook 09_jax (imported by make_notebooks.py, which writes the .ipynb)."""

from make_notebooks_cells import code, md

CELLS = [
    md("""
# 9. JAX: grpokit inside a jitted optax step

`grpokit.jax` puts the engine into a JAX program as XLA custom calls: `jax.jit`, `jax.grad`, `vmap`,
`lax.scan` and `shard_map` see ordinary ops (docs/jax.md). This notebook trains a tiny policy on the toy
task of `grpokit demo` (question q, the answer is token (q + 1) mod K, then filler until EOS) with JAX and
optax, and compares two presets: TRL's GRPO (per-sequence token mean) and Dr GRPO (a constant
normaliser, no length bias). Advantages, log-probabilities and the loss all run in grpokit's engine,
inside one jitted function per sampled batch (μ = 4 Adam steps in a `lax.scan`).
"""),
    code("""
%matplotlib inline
import numpy as np
import matplotlib.pyplot as plt
import jax, jax.numpy as jnp, optax
import grpokit.jax as gkj

K, V, T, H = 4, 6, 12, 32          # questions, vocabulary (K answers + filler + EOS), max length, hidden
FILLER, EOS, BOS = K, K + 1, K + 2
G, P, MU, STEPS = 8, 8, 4, 30      # group size, prompts per step, inner steps, sampled batches
"""),
    code("""
def init(key):
    k = jax.random.split(key, 5)
    n = lambda k, *s: jax.random.normal(k, s) * 0.3
    return dict(q=n(k[0], K, H), prev=n(k[1], V + 1, H), pos=n(k[2], T, H), w1=n(k[3], H, H), w2=n(k[4], H, V))

def logits_fn(params, q, prev, pos):
    h = jnp.tanh(params["q"][q] + params["prev"][prev] + params["pos"][pos])
    return jnp.tanh(h @ params["w1"]) @ params["w2"]

@jax.jit
def sample(params, key, q):
    \"\"\"Completions (B, T) and their mask (the tokens up to and including EOS).\"\"\"
    def step(carry, t):
        prev, alive, key = carry
        key, sub = jax.random.split(key)
        tok = jax.random.categorical(sub, logits_fn(params, q, prev, jnp.full_like(q, t)))
        tok = jnp.where(alive, tok, EOS)
        return (tok, alive & (tok != EOS), key), (tok, alive)
    _, (tokens, mask) = jax.lax.scan(step, (jnp.full_like(q, BOS), jnp.ones(q.shape, bool), key), jnp.arange(T))
    return tokens.T, mask.T

def token_logp(params, q, tokens):
    B = tokens.shape[0]
    prev = jnp.concatenate([jnp.full((B, 1), BOS), tokens[:, :-1]], axis=1)
    logits = logits_fn(params, q[:, None].repeat(T, 1), prev, jnp.arange(T)[None, :].repeat(B, 0))
    return gkj.token_logprobs(logits, tokens).logp   # grpokit's log-softmax + gather, differentiable
"""),
    md("""
## The jitted step
The preset is static: each preset compiles its own step. The metrics come back as 0-d arrays."""),
    code("""
opt = optax.adam(1e-2)

def make_step(spec):
    @jax.jit
    def train_batch(params, opt_state, q, tokens, mask, rewards):
        adv = gkj.advantages(rewards, G, estimator="trl.grpo")   # group-normalised, TRL's convention
        old = token_logp(params, q, tokens)
        def inner(carry, _):
            params, opt_state = carry
            def loss_fn(p):
                out = gkj.policy_loss(token_logp(p, q, tokens), old, adv, mask, spec=spec)
                return out.loss, out.metrics["clip_ratio/region_mean"]
            (loss, clip), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), clip
        (params, opt_state), clips = jax.lax.scan(inner, (params, opt_state), None, length=MU)
        return params, opt_state, clips
    return train_batch

def run(spec, seed=0):
    key = jax.random.PRNGKey(seed)
    params = init(key)
    opt_state, step = opt.init(params), make_step(spec)
    history = {"reward": [], "length": [], "clip": []}
    for _ in range(STEPS):
        key, kq, ks = jax.random.split(key, 3)
        q = jax.random.randint(kq, (P,), 0, K).repeat(G)
        tokens, mask = sample(params, ks, q)
        rewards = (tokens[:, 0] == (q + 1) % K).astype(jnp.float32)
        params, opt_state, clips = step(params, opt_state, q, tokens, mask, rewards)
        history["reward"].append(float(rewards.mean()))
        history["length"].append(float(mask.sum(1).mean()))
        history["clip"].append(float(clips[1:].mean()))   # inner step 0 has ratio 1: never clipped
    return history

z = jnp.zeros(P * G, jnp.int32)
hlo = make_step("trl.grpo").lower(init(jax.random.PRNGKey(0)), opt.init(init(jax.random.PRNGKey(0))), z,
                                  jnp.zeros((P * G, T), jnp.int32), jnp.ones((P * G, T), bool), z * 1.0).as_text()
print("grpokit custom calls in the step:", hlo.count("custom_call @grpokit"), "| host callbacks:", "callback" in hlo)
"""),
    code("""
runs = {spec: run(spec) for spec in ("trl.grpo", "trl.dr_grpo")}
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
for spec, h in runs.items():
    for ax, key in zip(axes, ("reward", "length", "clip")):
        ax.plot(h[key], label=spec)
for ax, title in zip(axes, ("reward", "completion length", "clip fraction (inner steps ≥ 1)")):
    ax.set(xlabel="sampled batch", title=title); ax.legend(fontsize=8)
fig.tight_layout()
for spec, h in runs.items():
    print(f"{spec:12s} reward, last 6 batches: {np.mean(h['reward'][-6:]):.2f}, length {np.mean(h['length'][-6:]):.1f}")
"""),
]
