"""Writes the numbered notebooks of this folder (outputs cleared): `python notebooks/make_notebooks.py`.

The notebooks are the source users open; this script is how we keep them consistent. Each notebook is
seeded, small (under a minute on 2 CPU cores), imports only the installed package and shows real
figures. CI executes them top to bottom (tests/python/test_notebooks.py). Files a notebook writes go
to $GRPOKIT_NOTEBOOK_OUT (CI sets it) or a temporary folder.
"""

from __future__ import annotations

import pathlib
import sys

import nbformat
from nbformat.v4 import new_notebook

HERE = pathlib.Path(__file__).resolve().parent

sys.path.insert(0, str(HERE))  # the cell helpers and the notebooks kept in their own files
import nb08_momentum_guard  # noqa: E402
import nb09_jax  # noqa: E402
from make_notebooks_cells import SETUP, code, md  # noqa: E402

BATCH = """
# One synthetic batch: P prompts × G completions, padded to T tokens.
P, G, T = 2, 4, 10
B = P * G
lengths = rng.integers(3, T + 1, B)
mask = np.arange(T)[None, :] < lengths[:, None]
rewards = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
old_logp = np.log(rng.uniform(0.2, 0.9, (B, T)))
logp = old_logp + rng.normal(0.0, 0.15, (B, T))   # the policy after a few inner steps
ref_logp = old_logp + rng.normal(0.0, 0.05, (B, T))
ids = rng.integers(0, 5, (B, T)); ids[:, :3] = ids[0, :3]   # a 3-token prefix shared by every completion
batch = dict(rewards=rewards, group_size=G, logp=logp, old_logp=old_logp, ref_logp=ref_logp,
             mask=mask, completion_ids=ids)
"""

NOTEBOOKS = {
    "01_quickstart": [
        md("""
# 1. Quick start: advantages and every loss preset on one batch

grpokit computes the GRPO family's losses and their exact gradients with respect to the per-token
log-probabilities in a C++ engine. This notebook builds one small batch, computes its advantages and
runs **every preset** (`grpokit.presets()`) on it, side by side.
"""),
        code(SETUP),
        code(BATCH),
        md("""
## Advantages
The same rewards give different advantages under each trainer's convention: the papers' population
std, TRL's sample std + 1e-4, or no std at all (Dr GRPO)."""),
        code("""
for name, opts in {"paper (population std)": dict(std="population"),
                   "TRL scale_rewards='group'": dict(estimator="trl.grpo"),
                   "no std (Dr GRPO)": dict(std="none")}.items():
    print(f"{name:28s}", np.round(grpokit.advantages(rewards, G, **opts), 4))
"""),
        md("""
## One preset
`policy_loss` returns the loss (to minimise), `grad_logp` = ∂loss/∂logp (what autograd needs) and metrics."""),
        code("""
adv = grpokit.advantages(rewards, G, estimator="trl.grpo")
res = grpokit.policy_loss(logp, old_logp, adv, mask, spec="trl.grpo", ref_logp=ref_logp)
print("loss", float(res.loss))
print({k: round(float(v), 4) for k, v in res.metrics.items()})
"""),
        md("""
## Every preset on the same batch
`grpokit.compare` runs each preset with its own advantage convention and puts loss, gradient norm,
clip fractions, prefix bias and the effective weight of every completion in one table. Note how little
the loss *value* says: the surrogate is not a progress metric (it is ~0 on policy by construction)."""),
        code("""
table = grpokit.compare(batch)
print(table)
"""),
        code("""
fig = table.plot()
"""),
        md("""
## Gradients side by side
∂loss/∂logp of the first completion under a few presets: the normaliser (1/|o_i|, 1/Σ|o|, 1/L_max)
sets the scale and the per-token profile."""),
        code("""
fig, ax = plt.subplots(figsize=(7, 3.5))
for name in ["trl.grpo", "trl.dapo", "trl.dr_grpo", "paper.gspo", "trl.cispo"]:
    g = table.grads[name][0][mask[0]]
    ax.plot(g, "o-", label=name)
ax.set(xlabel="token", ylabel="∂loss/∂logp", title="completion 0 (A > 0)")
ax.legend(fontsize=7);
"""),
    ],
    "02_variants": [
        md("""
# 2. Comparing variants: the demo's training runs

`grpokit demo` trains a tiny autoregressive policy on a task whose reward is **blind to length**
(the first token answers a question; filler tokens follow until EOS), under several variants with
AdamW and μ inner steps per batch. Gradients come from the engine. Here with a smaller budget."""),
        code(
            SETUP
            + """
import os, tempfile
from grpokit import demo
out = os.environ.get("GRPOKIT_NOTEBOOK_OUT") or tempfile.mkdtemp()"""
        ),
        code("""
cfg = demo.DemoConfig(steps=25, inner_steps=4, progress=False, out_dir=os.path.join(out, "demo"))
runs, paths = demo.run_demo(cfg)
print(demo.format_table(runs))
"""),
        md("""
The figures `grpokit demo` writes (PNG files), drawn here inline:"""),
        code("""
figs = demo.figures(runs, cfg)
"""),
        md("""
Things to look for:
* **clip fraction at k = 0 is 0** — with one update per batch (μ = 1) the ratio is 1 and nothing is
  ever clipped; the clip region only fills at inner steps k ≥ 1.
* **length drift** — the reward ignores length, so a drift comes from the training procedure, not the
  reward. One run is one seed and drifts vary between seeds: compare variants with each other, over
  seeds (`demo.run_seeds`, `grpokit demo --seeds 4`). 1/|o_i| weighting (`trl.grpo`) gives the tokens of
  short wrong answers larger penalties than those of long wrong ones; in each of four seeds of the
  default demo it drifted shorter than uniform weights (`trl.dr_grpo`) did (README). Whether lengths
  rise or fall in absolute terms depends on the run.
* **overshoot** — the ratio ends past the clip bound after the μ steps although the clipped tokens get
  no gradient: Adam's momentum carries them.
"""),
        md("""
## Your own variant
Any preset with overrides, e.g. TRL's GSPO recipe (sequence-level ratio on `trl.grpo`) and DAPO with a wider clip:"""),
        code("""
mine = demo.run_demo(cfg, variants=["gspo=trl.grpo:importance_sampling_level=sequence,epsilon=3e-4,epsilon_high=4e-4",
                                    "trl.dapo:epsilon_high=0.4"], steps=15, plots=False)[0]
print(demo.format_table(mine))
"""),
        md("""
## Whole methods on one batch: estimator, correction, loss
A variant can also name an advantage estimator (`estimator=`, any of `grpokit.advantages`) and a
train–inference correction (`correction=`, any of `grpokit.CORRECTIONS`, applied to the batch's sampler
log-probabilities). `grpokit.compare` then compares whole methods, and `grpokit.explain` says how much of a
difference each part makes."""),
        code("""
rng = np.random.default_rng(0)
B, T, G = 16, 12, 4
mask = np.arange(T)[None, :] < rng.integers(4, T + 1, B)[:, None]
old = np.log(rng.uniform(0.2, 0.9, (B, T)))
batch = dict(rewards=rng.integers(0, 2, B).astype(float), group_size=G, mask=mask, old_logp=old,
             logp=old + rng.normal(0, 0.15, (B, T)), sampling_logp=old + rng.normal(0, 0.3, (B, T)))
table = grpokit.compare(batch, presets=["trl.dapo", "trl.dapo:estimator=rloo",
                                        "trl.dapo:correction=verl.seq_is_rs",
                                        "verl.vanilla:estimator=verl.opo,correction=verl.token_icepop"])
print(table)
print(grpokit.explain(batch, "trl.dapo", "trl.dapo:estimator=rloo,correction=verl.token_icepop"))
"""),
    ],
    "03_prefix_bias": [
        md("""
# 3. Shared-prefix bias and the length preference of 1/|o| weighting

Tokens of a prefix shared by several completions of a group get the gradient coefficient
W = Σ_{i∈G̃} ω_{i,t} A_i (Prop. 1). With uniform weights ω and centred advantages a prefix shared by the
whole group cancels; with 1/|o_i| weighting it does not, and the leftover favours the short completions."""),
        code(SETUP),
        code("""
# One group of 4: all start with the same 3 tokens; two are right (A > 0), two wrong; lengths differ.
G = 4
lengths = np.array([4, 12, 6, 10])
T = lengths.max()
mask = np.arange(T)[None, :] < lengths[:, None]
ids = np.tile(np.arange(T), (G, 1)) + 100 * np.arange(G)[:, None]
ids[:, :3] = [7, 8, 9]                       # the shared prefix
rewards = np.array([1.0, 1.0, 0.0, 0.0])
logp = np.log(np.full((G, T), 0.5))
batch = dict(rewards=rewards, group_size=G, logp=logp, old_logp=logp, mask=mask, completion_ids=ids)
"""),
        md("""
## The prefix trie
`node[i, t]` names the node of prefix y_{i,≤t} (equal ids = the same prefix), `count` how many completions
share it; `coef` is W on that node, `bias` the part due to non-uniform weights."""),
        code("""
rep = grpokit.diagnostics.prefix_bias(dict(batch, advantages=grpokit.advantages(rewards, G, std="population")),
                                      "trl.grpo")
print("node ids:"); print(rep.node)
print("completions sharing each prefix:"); print(rep.count)
print(rep)
fig = rep.plot()
"""),
        md("""
## Per-token coefficients under three normalisers
The coefficient on the shared prefix is 0 for token-mean (DAPO) and token-sum (Dr GRPO) weighting and
non-zero for the per-sequence mean (GRPO):"""),
        code("""
t = grpokit.compare(batch, presets=["trl.grpo", "trl.dapo", "trl.dr_grpo", "paper.gspo"])
print(t)
fig, ax = plt.subplots(figsize=(6, 3.5))
names = [r["preset"] for r in t.rows]
ax.bar(names, [r["prefix_bias"] for r in t.rows])
ax.set(ylabel="|bias| on the whole-group prefix", title="shared-prefix bias per preset");
"""),
        md("""
## The length preference
ω per completion against its length: 1/|o_i| weighting gives every completion the same total weight,
so each token of a short completion weighs more. With A < 0 that punishes short wrong answers harder
than long ones, with A > 0 it favours short right ones: relative to uniform weights, the policy is pushed
towards longer wrong and shorter right answers."""),
        code("""
fig, ax = plt.subplots(figsize=(6, 3.5))
for name in ["trl.grpo", "trl.dapo", "trl.dr_grpo"]:
    r = grpokit.policy_loss(logp, logp, t.advantages[name], mask, spec=name, return_weights=True)
    per_token = np.array([r.weights[i, 0] for i in range(G)])
    ax.plot(lengths, per_token / per_token.max(), "o", label=name)
ax.set(xlabel="completion length |o_i|", ylabel="weight of one token (normalised)")
ax.legend();
"""),
    ],
    "04_adamw_reward_scale": [
        md("""
# 4. AdamW and the reward scale: ε-dominance

Adam's update m̂/(√v̂ + ϵ) does not change when every gradient is scaled by φ — as long as ϵ ≪ √v̂
(Prop. 2). Where ρ = ϵ/√v̂ is not small, ϵ dominates and the step scales with the rewards. The
diagnostic reads the optimizer's real state; the replay confirms its prediction."""),
        code(
            SETUP
            + """
import torch
_ = torch.manual_seed(0)"""
        ),
        code("""
# A tiny softmax policy over 6 outputs, REINFORCE-style loss with centred (not σ-normalised) rewards.
def make(eps):
    model = torch.nn.Linear(4, 6)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, eps=eps)
    return model, opt

x = torch.randn(32, 4)
r_true = torch.randn(6)
def loss_fn(model, phi=1.0, scale=1e-3):
    logp = torch.log_softmax(model(x), -1)
    a = torch.multinomial(logp.exp().detach(), 1, generator=torch.Generator().manual_seed(1)).squeeze(1)
    adv = phi * scale * (r_true[a] - r_true[a].mean())         # small rewards: √v̂ small
    return -(adv * logp.gather(1, a[:, None]).squeeze(1)).mean()

reports = {}
for eps in (1e-8, 1e-5):
    model, opt = make(eps)
    for _ in range(20):
        opt.zero_grad(); loss_fn(model).backward(); opt.step()
    reports[eps] = (model, opt, grpokit.diagnostics.reward_scale(opt, named=model))
    print(f"eps = {eps:g}:", reports[eps][2].verdict)
"""),
        code("""
fig = reports[1e-5][2].plot()
"""),
        md("""
## The replay
Re-run the next steps on copies with rewards × 10: the measured change of the displacement matches the
prediction from ρ (and is ≈ 1 only where ϵ is negligible)."""),
        code("""
for eps, (model, opt, rep) in reports.items():
    replay = grpokit.diagnostics.reward_scale_replay(model, opt, loss_fn, phi=10.0, steps=3)
    print(f"eps = {eps:g}: measured step ratio {replay.measured_ratio:.3f}, predicted {replay.predicted_ratio:.3f}")
fig = replay.plot()
"""),
    ],
    "05_momentum": [
        md("""
# 5. Momentum past the clip region

Once a token's ratio leaves the clip region its advantage gradient is 0, but Adam keeps moving the
parameters: the step k steps later is C_{T,k} ≈ (β1/√β2)^(k+1) times the last one (Props 3, 7). With
μ > 1 inner steps per batch the ratios therefore overshoot the bound."""),
        code(
            SETUP
            + """
import torch
from grpokit import diagnostics as dg"""
        ),
        md("## Overshoot coefficient against β1/√β2"),
        code("""
fig, ax = plt.subplots(figsize=(6, 3.5))
for b1, b2 in [(0.9, 0.999), (0.9, 0.95), (0.95, 0.95), (0.8, 0.99)]:
    ks = np.arange(8)
    ax.plot(ks, [dg.overshoot_coefficient(None, int(k), (b1, b2)) for k in ks], "o-",
            label=f"β=({b1}, {b2}): β1/√β2 = {b1 / np.sqrt(b2):.3f}")
    ax.plot(ks, [dg.overshoot_coefficient(5, int(k), (b1, b2)) for k in ks], ":", color=ax.lines[-1].get_color())
ax.set(xlabel="k (steps after the gradient vanished)", ylabel="C_T,k", title="solid: large T; dotted: T = 5")
ax.legend(fontsize=7);
"""),
        md("""
## Inner-step trajectories
One token, π = σ(z), π_old = 0.5, A = +1, ε = 0.2, trained for μ = 8 inner steps with the engine's
gradient. The tracker records, before every optimizer step, the clip region and the Adam step ratio."""),
        code("""
z = torch.zeros(1, requires_grad=True)
opt = torch.optim.Adam([z], lr=0.1, betas=(0.9, 0.95))
tracker = dg.MomentumTracker(opt, epsilon=0.2, mu=8)
old = torch.log(torch.tensor([[0.5]], dtype=torch.float64))
adv = torch.tensor([1.0], dtype=torch.float64)
ratios = []
for k in range(8):
    logp = torch.nn.functional.logsigmoid(z).double()[None, :]
    res = grpokit.policy_loss(logp.detach(), old, adv, spec="paper.dapo", epsilon_high=0.2)
    opt.zero_grad(); logp.backward(res.grad_logp)
    ratios.append(float(torch.exp(logp.detach() - old)))
    tracker.step(torch.exp(logp.detach() - old), adv)
    opt.step()
report = tracker.report()
print(report)
fig = report.plot()
"""),
        code("""
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(ratios, "o-", label="ratio before step k")
ax.axhline(1.2, color="C3", lw=0.8, label="1 + ε")
ax.set(xlabel="inner step k", ylabel="π/π_old"); ax.legend();
"""),
        md("""
## Momentum look-ahead
Where would momentum alone take each token's ratio on the next step? (the current gradient removed)"""),
        code("""
torch.manual_seed(0)
B, T, V = 8, 6, 5
model = torch.nn.Linear(3, V).double()
feats = torch.randn(B, T, 3, dtype=torch.float64)
tokens = torch.randint(V, (B, T))
def logp_fn(forward):
    return torch.log_softmax(forward(feats), -1).gather(-1, tokens[..., None]).squeeze(-1)
opt = torch.optim.AdamW(model.parameters(), lr=0.05, betas=(0.9, 0.95))
with torch.no_grad():
    old = logp_fn(model)
adv = torch.tensor(grpokit.advantages(rng.integers(0, 2, B).astype(float), 4, std="population"))
for k in range(4):
    lp = logp_fn(model)
    res = grpokit.policy_loss(lp.detach(), old, adv, spec="trl.dapo")
    opt.zero_grad(); lp.backward(res.grad_logp); opt.step()
look = dg.momentum_lookahead(model, opt, logp_fn, old, adv.numpy(), epsilon=0.2)
print(look)
fig = look.plot()
"""),
    ],
    "06_stationary": [
        md("""
# 6. Stationary policies: what GRPO converges to

GRPO's expected update stops at π(o)·[1 − (P_G(o|π) − E_π P_G)/β] = π_ref(o) (Vojnovic & Yun), not at
RLHF's logarithmic pooling π ∝ π_ref·exp(r/β). `grpokit.stationary` solves it and draws the paper's
figures."""),
        code(
            SETUP
            + """
from grpokit import stationary as st"""
        ),
        md("## The paper's figures"),
        code("""
fig, axes = plt.subplots(1, 3, figsize=(14, 4))
st.plot_figure1(ax=axes[0]); st.plot_figure2(ax=axes[1]); st.plot_figure3(ax=axes[2])
fig.tight_layout()
"""),
        md("""
## GRPO vs RLHF pooling for your rewards
Put your own rewards and reference probabilities here."""),
        code("""
rewards = np.array([1.0, 0.7, 0.2, 0.0])
pi_ref = np.array([0.1, 0.2, 0.3, 0.4])
cmp = st.compare(rewards, pi_ref, beta=0.5, G_values=(2, 4, 8, st.INF))
print(cmp)
ax = cmp.plot()
"""),
        code("""
ax = st.plot_binary_comparison(beta=0.5)
"""),
    ],
    "07_trl": [
        md("""
# 7. TRL: GRPOTrainer with a grpokit loss and the diagnostics callback

`grpokit.integrations.trl.GRPOTrainer` is TRL's trainer with the policy loss computed by grpokit:
`loss=` takes any preset (here the paper's Dr GRPO row, without its KL term: `loss_options` overrides
the preset, and TRL computes no reference log-probabilities with its default `beta=0`).
`DiagnosticsCallback` adds grpokit's diagnostics to the trainer's logs (keys `grpokit/...`): clip region
per inner step, Adam overshoot, ε-dominance, prefix bias. A tiny local model (a 2-layer Qwen2 built from a
config, a word-level
tokenizer: no downloads) trains for a few steps on a programmatic reward."""),
        code(
            SETUP
            + """
import os, tempfile, warnings
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from trl import GRPOConfig
from grpokit.integrations.trl import DiagnosticsCallback, GRPOTrainer
_ = torch.manual_seed(0)
out = os.environ.get("GRPOKIT_NOTEBOOK_OUT") or tempfile.mkdtemp()"""
        ),
        code("""
words = ["a", "b", "c", "d", "e", "f", "g", "h"]
tok = Tokenizer(models.WordLevel(vocab={"<pad>": 0, "<eos>": 1, **{w: i + 2 for i, w in enumerate(words)}},
                                 unk_token="<pad>"))
tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", padding_side="left")
model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(words) + 2, hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                     max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=1,
                                     tie_word_embeddings=True))
dataset = Dataset.from_dict({"prompt": [" ".join(words[(i + j) % 8] for j in range(3)) for i in range(16)]})

def reward_count_a(completions, **kwargs):
    return [float(c.split().count("a")) for c in completions]
"""),
        md("""
`num_iterations=2` is μ = 2 inner steps per generation batch: with μ = 1 the ratio is always 1 and the
clip fraction is 0 by construction (the callback says so rather than leaving it a mystery).
`logprobs="grpokit"` computes the per-token log-probabilities and entropies with grpokit's fused
hidden × weight op instead of TRL's fused LM head (no tokens × vocabulary buffer either way)."""),
        code("""
args = GRPOConfig(output_dir=os.path.join(out, "trl"), per_device_train_batch_size=4, num_generations=4,
                  gradient_accumulation_steps=2, num_iterations=2, max_completion_length=6, max_steps=6,
                  logging_steps=1, learning_rate=1e-2, report_to="none", save_strategy="no", use_cpu=True,
                  seed=0, disable_tqdm=True, bf16=False)
trainer = GRPOTrainer(model=model, reward_funcs=reward_count_a, args=args, train_dataset=dataset,
                      processing_class=tokenizer, loss="paper.dr_grpo", loss_options={"beta": 0.0},
                      logprobs="grpokit", callbacks=[DiagnosticsCallback()])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    trainer.train()
print("loss spec:", trainer.loss_spec.aggregation, "| grpokit warnings:", [str(w.message)[:90] for w in caught
                                                                          if "grpokit" in str(w.message)])
"""),
        code("""
history = [h for h in trainer.state.log_history if "loss" in h]   # one entry per optimizer step
keys = sorted({k for h in history for k in h if k.startswith("grpokit/")})
print(keys)
col = lambda k: [h.get(k, np.nan) if h.get(k) is not None else np.nan for h in history]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
axes[0].plot(col("reward"), "o", label="reward (generation steps)")
axes[0].plot(col("clip_ratio/region_mean"), "s", label="TRL clip_ratio/region_mean")
axes[0].set(xlabel="optimizer step", title="TRL's metrics"); axes[0].legend(fontsize=7)
for k in ["grpokit/clip_region/inner_step_1", "grpokit/overshoot", "grpokit/overshoot_bound",
          "grpokit/stale_momentum_share"]:
    axes[1].plot(col(k), "o-", label=k.replace("grpokit/", ""))
axes[1].set(xlabel="optimizer step", title="grpokit diagnostics"); axes[1].legend(fontsize=7)
fig.tight_layout()
"""),
    ],
    "08_momentum_guard": nb08_momentum_guard.CELLS,
    "09_jax": nb09_jax.CELLS,
}

REQUIRES = {
    "06_stationary": ["grpokit.stationary"],
    "07_trl": ["grpokit.integrations.trl"],
    "09_jax": ["grpokit.jax", "optax"],
}


def build(name: str, cells) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives the same files
        cell.id = f"{name[:2]}-{i:02d}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["grpokit"] = {"requires": REQUIRES.get(name, [])}
    return nb


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        path = HERE / f"{name}.ipynb"
        nb = build(name, cells)
        nbformat.validate(nb)
        nbformat.write(nb, path)
        print("wrote", path.relative_to(HERE.parent))


if __name__ == "__main__":
    main()
