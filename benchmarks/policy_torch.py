"""Every grpokit preset as whole-array PyTorch, the way TRL and verl write their losses: the baseline of
the policy-loss benchmark (bench_policy_loss.py --matrix).

One function per rule, composed as the engine composes them (docs/losses.md): ratio → surrogate →
trust region → weight rules → regularisers → aggregation (− entropy bonus), then autograd. Each rule
is written from its peer's own code where it has one: TRL 1.16.0 GRPOTrainer._compute_loss and
get_gamma_weights (clip with δ, SAPO, CISPO, VESPO, the KL with its bias correction, the vLLM IS
weight, the off-policy sequence mask, the top-entropy mask, the entropy bonus), verl 0.9.1
core_algos.compute_policy_loss_* (dual clip, GSPO-token, geo_mean, CISPO, clip_cov, kl_cov, DPPO-TV/KL,
DRO, kl_penalty's low_var_kl clamps), ROLL (TOPR, the unified CISPO mask), prime-rl (default, ipo),
AReaL (M2PO's token mask) and NeMo-RL (VAPO's positive-example NLL).
Where the peers differ only in a guard the engine fixes (verl's L + 1e-8, TRL's unmasked sums) the
engine's convention is used, so the loss and gradient equal grpokit's (tests/python/test_bench_formulations.py).

``f`` is ``LossSpec.engine_fields()``: unset bounds are ±inf, an unset threshold NaN, an unset count −1.
"""

from __future__ import annotations

import math

import torch


def _row_mean(v, m, L):
    return (v * m).sum(-1, keepdim=True) / L


def _by_sign(cond, yes, no, like):
    """``yes`` where ``cond`` else ``no``, in the dtype of ``like`` (not torch's default float32)."""
    return no + (yes - no) * cond.to(like.dtype)


def ratio(f, x, old, m, L):
    """(r with its gradient, the log-ratio d = ℓ − ℓ_old): token, GSPO's sequence mean, GSPO-token,
    GCPO's sequence sum; the log is clamped to [log_ratio_min, log_ratio_max] before exp (verl ±20)."""
    lo, hi = f["log_ratio_min"], f["log_ratio_max"]
    d = x - old
    if f["ratio"] == "token":
        return torch.exp(d.clamp(lo, hi)), d
    if f["ratio"] == "sequence_token":  # verl gspo: exp(sg(log s_i) + ℓ − sg ℓ), clamped
        u = _row_mean(d, m, L).detach()
        return torch.exp((u + x - x.detach()).clamp(lo, hi)), d
    s = (d * m).sum(-1, keepdim=True)
    u = s if f["ratio"] == "sequence_sum" else s / L
    return torch.exp(u.clamp(lo, hi)).expand_as(x), d


def _dppo_mask(f, x, old, a, kind):
    """verl compute_policy_loss_dppo_tv / _kl: the tokens inside the binary TV / KL trust region."""
    el, eh = f["epsilon_low"], f["epsilon_high"]
    p, po = torch.exp(x), torch.exp(old)
    if kind == "tv":
        return torch.where(a > 0, p - po <= eh, p - po >= -el)
    b = po * (old - x) + (1 - po) * torch.log((1.0 - po + 1e-8) / (1.0 - p + 1e-8))
    return torch.where(a > 0, (b <= eh) | (p <= po), (b <= el) | (p >= po))


def sampler_is_weight(f, old, smp, m):
    """TRL's vLLM importance-sampling weight ρ = exp(ℓ_old − ℓ_smp) per token, or exp of its masked row
    sum per sequence; truncated to [is_min, is_max] or zeroed outside it (detached)."""
    d = torch.nan_to_num((old - smp) * m, nan=0.0)
    if f["sampler_is"].startswith("sequence"):
        d = d.sum(-1, keepdim=True)
    rho = torch.exp(d)
    lo, hi = f["is_min"], f["is_max"]
    if f["sampler_is"].endswith("truncate"):
        return rho.clamp(lo, hi)
    return torch.where((rho < lo) | (rho > hi), torch.zeros_like(rho), rho)


def _vespo_weight(f, d, a, m, smp_w):
    """TRL get_gamma_weights: φ(W) = exp(λ + k·log W − λ·W) of the sequence IS ratio W (log clamped)."""
    lower = math.log(1e-8)
    lw = (d.detach().clamp(-20.0, 20.0) * m).sum(-1, keepdim=True)
    if smp_w is not None:
        lw = lw + (torch.log(smp_w).clamp(lower, 20.0) * m).sum(-1, keepdim=True)
    lw = lw.clamp(lower, 20.0)
    pos = a >= 0
    k = _by_sign(pos, f["vespo_k_pos"], f["vespo_k_neg"], a)
    lam = _by_sign(pos, f["vespo_lambda_pos"], f["vespo_lambda_neg"], a).clamp(min=1e-4)
    return torch.exp(lam + k * lw - lam * torch.exp(lw)).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)


def logp_weight(f, r, d, x, old, a, m, smp_w):
    """The detached weight w of the log-π surrogate −w·A·ℓ (GPG, CISPO, DPPO, VESPO, TOPR, REINFORCE)."""
    el, eh, rs = f["epsilon_low"], f["epsilon_high"], r.detach()
    kind = f["logp_weight"]
    if kind == "one":
        return torch.ones_like(rs)
    if kind == "ratio":
        return rs
    if kind == "clip":  # verl cispo
        return rs.clamp(1 - el, 1 + eh)
    if kind == "cap":  # TRL cispo (ε_high a raw cap)
        return rs.clamp(max=eh)
    if kind in ("dppo_tv", "dppo_kl"):  # truncated IS on the trust-region tokens
        return _dppo_mask(f, x.detach(), old, a, kind[5:]) * rs.clamp(max=f["clip_ratio_c"])
    if kind == "vespo":
        return _vespo_weight(f, d, a, m, smp_w)
    return torch.where(a > 0, torch.ones_like(rs), rs.clamp(0.0, 1.0))  # ROLL topr


def surrogate(f, r, d, x, old, a, m, L, smp_w, metrics):
    """The policy term −A·v(r) per token (before weights)."""
    el, eh = f["epsilon_low"], f["epsilon_high"]
    kind = f["surrogate"]
    if kind == "clip":  # TRL: min with δ; verl: dual clip c for A < 0
        rc = r.clamp(1 - el, 1 + eh)
        pg = torch.maximum(-a * r.clamp(max=f["delta"]), -a * rc)
        if f["clip_ratio_c"] != math.inf:
            pg = torch.where(a < 0, torch.minimum(pg, -a * f["clip_ratio_c"]), pg)
        with torch.no_grad():
            low, high = (r < 1 - el) & (a < 0), (r > 1 + eh) & (a > 0)
            n = m.sum()
            metrics["clip_ratio/low_mean"] = (low * m).sum() / n
            metrics["clip_ratio/high_mean"] = (high * m).sum() / n
            metrics["clip_ratio/low_min"] = ((low * m).sum(-1) / L.squeeze(-1)).min()
            metrics["clip_ratio/high_max"] = ((high * m).sum(-1) / L.squeeze(-1)).max()
        return pg
    if kind == "unclipped":
        return -a * r
    if kind == "sapo":  # TRL: (4/τ)·σ(τ(r − 1)), τ by the sign of A
        tau = _by_sign(a > 0, f["sapo_temperature_pos"], f["sapo_temperature_neg"], a)
        return -a * 4.0 / tau * torch.sigmoid(tau * (r - 1.0))
    if kind == "logp":
        w = logp_weight(f, r, d, x, old, a, m, smp_w)
        if f["logp_weight"] in ("clip", "cap", "dppo_tv", "dppo_kl"):
            with torch.no_grad():  # verl pg_clipfrac / TRL cispo_clip_ratio: the weight differs from r
                metrics["pg_clipfrac"] = ((w != r.detach()) * m).sum() / m.sum()
        return -w * a * x
    # verl geo_mean (GMPO): sign-aware clip of the log-ratio, geometric mean per sequence, times Ā
    sgn = torch.sign(a)
    dhat = sgn * torch.minimum(sgn * d, sgn * d.clamp(-el, eh))
    R = torch.exp(_row_mean(dhat, m, L))
    return -_row_mean(a.expand_as(x), m, L) * R * m


def trust_region(f, r, x, old, a):
    """1 where the token keeps its policy term: ROLL's unified CISPO mask (ppo), prime-rl default
    (dppo_tv) and ipo (tv)."""
    kind, el, eh = f["trust_region"], f["epsilon_low"], f["epsilon_high"]
    if kind == "ppo":
        rs = r.detach()
        return ~(((a > 0) & (rs > 1 + eh)) | ((a < 0) & (rs < 1 - el)))
    if kind == "dppo_tv":
        return _dppo_mask(f, x.detach(), old, a, "tv")
    dp = torch.exp(x.detach()) - torch.exp(old)
    return (dp >= -el) & (dp <= eh)


def top_entropy_mask(f, H, m):
    """TRL get_high_entropy_mask: the valid tokens with H ≥ the (1 − q) quantile of the valid H."""
    thr = torch.quantile(H[m > 0], 1.0 - f["top_entropy_quantile"])
    return (H >= thr) & (m > 0)


def m2po_mask(f, x, old, smp, m):
    """AReaL _get_m2po_loss_mask: drop the valid tokens with the largest (log r)² (log r = ℓ_old − ℓ_smp
    with sampler log-probs, else ℓ − ℓ_old) until the mean of the rest is under the threshold (a sort,
    as AReaL does; ties with the first kept token stay, the engine's convention)."""
    with torch.no_grad():
        d = old - smp if smp is not None else x.detach() - old
        m2 = torch.where((m > 0) & ~torch.isnan(d), d, torch.zeros_like(d)) ** 2
        v = torch.sort(m2[m > 0], descending=True).values
        if v.numel() == 0:
            return m
        n = v.numel()
        suffix_mean = torch.flip(torch.cumsum(torch.flip(v, (0,)), 0), (0,)) / torch.arange(n, 0, -1, dtype=v.dtype)
        below = torch.nonzero(suffix_mean < f["m2_threshold"])
        k = int(below[0, 0]) if below.numel() else n - 1
        return m * (m2 <= v[k]).to(m.dtype)


def positive_nll(f, x, m, sel):
    """NeMo-RL ClippedPGLossFn's positive_example_nll_weight: μ·mean(−ℓ) over the valid selected tokens
    (rewards > 0), outside the per-token term and its aggregation; scaled as the aggregation is."""
    pm = m * sel.to(m.dtype)
    n = pm.sum()
    if n == 0:
        return None
    scale = f["dp_size"] / (f["gradient_accumulation_steps"] if f["divide_by_ga"] else 1.0)
    return f["positive_example_nll_weight"] * scale * (-x * pm).sum() / n


def weight(f, x, old, a, m, L, H, smp, smp_w, sel):
    """The weight rules' product (TRL's order: OPSM, entropy mask, sampler IS; CPPO, clip_cov), or None."""
    w = []
    if f["prune_threshold"] != -math.inf:  # CPPO: prune completions with |A| ≤ γ
        w.append(a.abs() > f["prune_threshold"])
    if not math.isnan(f["off_policy_mask_threshold"]):  # TRL / DeepSeek-V3.2 off-policy sequence mask
        src = old if smp is None else smp
        avg = _row_mean(torch.nan_to_num(src - x.detach(), nan=0.0), m, L)
        w.append((a >= 0) | (avg <= f["off_policy_mask_threshold"]))
    if f["top_entropy_quantile"] < 1.0:
        w.append(top_entropy_mask(f, H, m))
    if smp_w is not None and f["logp_weight"] != "vespo":  # VESPO folds ρ into its W
        w.append(smp_w)
    if f["selection"] == "clip_cov":  # verl clip_cov: the selected tokens get no policy gradient
        w.append(~sel)
    if not w:
        return None
    out = w[0].to(x.dtype)
    for v in w[1:]:
        out = out * v
    return out


def kl_term(f, x, ref, r, metrics):
    """The KL estimator of π against π_ref (verl kl_penalty; low_var_kl = k3 with its clamps), × r when
    IS-corrected (TRL use_bias_correction_kl), value of k with k2's gradient when straight-through."""
    est = f["kl"]
    lc, vc = (f["kl_log_clamp"], f["kl_value_clamp"]) if est == "k3" else (math.inf, math.inf)

    def k_of(v):
        z = (ref - v).clamp(-lc, lc)
        k = {"k1": lambda: -z, "k2": lambda: 0.5 * z * z, "k3": lambda: torch.exp(z) - z - 1.0, "abs": z.abs}[est]()
        return k.clamp(-vc, vc)

    k = k_of(x)
    if f["kl_straight_through"]:
        k2 = 0.5 * (x - ref) ** 2
        k = k2 + (k - k2).detach()
    if f["kl_is_corrected"]:
        k = k * r
    with torch.no_grad():
        metrics["kl"] = k.detach()
    return k


def aggregate(f, phi, m, L):
    """Σ_i c_i Σ_t φ (every aggregation rule; φ is already masked), × dp_size (÷ K where divide_by_ga)."""
    B, agg = phi.shape[0], f["aggregation"]
    scale = f["dp_size"] / (f["gradient_accumulation_steps"] if f["divide_by_ga"] else 1.0)
    if f["num_sequences"] >= 0:
        n_seq = f["num_sequences"]
    else:
        n_seq = (m.sum(-1) > 0).sum().clamp(min=1) if f["seq_count_nonempty"] else B
    if agg == "token_mean":
        n_tok = f["num_items_in_batch"] if f["num_items_in_batch"] >= 0 else m.sum().clamp(min=1.0)
        return scale * phi.sum() / n_tok
    if agg == "token_sum":
        return scale * phi.sum()
    if agg == "seq_mean_token_mean":
        return scale * (phi.sum(-1, keepdim=True) / L).sum() / n_seq
    if agg == "seq_mean_token_sum":
        return scale * phi.sum() / n_seq
    if agg == "seq_mean_token_sum_norm":
        C = f["max_completion_length"] if f["max_completion_length"] > 0 else float(m.shape[1])
        return scale * phi.sum() / (n_seq * C)
    G = int(f["group_size"])  # prompt_mean: token mean inside each group of G rows, mean over prompts
    per = phi.reshape(B // G, -1).sum(-1) / m.reshape(B // G, -1).sum(-1).clamp(min=1.0)
    n_prompt = f["num_prompts"] if f["num_prompts"] >= 0 else B // G
    return scale * per.sum() / n_prompt


def policy_loss(f, lp, old, A, mask, ref=None, H=None, smp=None, sel=None, backward=True):
    """(loss, ∂loss/∂logp or None, metrics) of the rule row ``f`` for float (B, T) tensors; ``mask`` is
    0/1 in the dtype of ``lp``, ``A`` is (B,), ``sel`` a bool (B, T) selection. Metrics stay tensors (a
    .item() each would synchronise)."""
    x = lp.detach().requires_grad_(True)
    m = mask if math.isnan(f["m2_threshold"]) else m2po_mask(f, x, old, smp, mask)
    L = m.sum(-1, keepdim=True).clamp(min=1.0)
    a = A.unsqueeze(-1)
    metrics = {}
    r, d = ratio(f, x, old, m, L)
    smp_w = None
    if smp is not None and f["sampler_is"] != "none":
        smp_w = sampler_is_weight(f, old, smp, m)
    phi = surrogate(f, r, d, x, old, a, m, L, smp_w, metrics)
    if f["trust_region"] != "none":
        phi = phi * trust_region(f, r, x, old, a)
    w = weight(f, x, old, a, m, L, H, smp, smp_w, sel)
    if w is not None:
        phi = phi * w
    beta = f["beta"]
    if f["kl"] != "none" and beta != 0.0:
        phi = phi + beta * kl_term(f, x, ref, r, metrics)
    if f["gtpo_entropy"] and beta != 0.0 and H is not None:  # GTPO: β·⟨H⟩_i·e^(ℓ − ℓ_old)
        phi = phi + beta * _row_mean(H, m, L) * torch.exp(d)
    if f["selection"] == "kl_cov":  # verl kl_cov: + coef·|log r| on the selected tokens
        phi = phi + f["ppo_kl_coef"] * d.abs() * sel
    if f["dro_beta"] != 0.0:  # verl dro / prime-rl: + ½β(log r)²
        phi = phi + 0.5 * f["dro_beta"] * d * d
    loss = aggregate(f, phi * m, m, L)
    if f["entropy_coef"] != 0.0:
        if f["entropy_aggregation"] == "policy":  # verl: the policy term's aggregation
            bonus = aggregate(f, H * m, m, L)
        else:  # TRL: mean over the (entropy-masked) tokens of the call, ÷ K
            em = m * top_entropy_mask(f, H, m) if f["top_entropy_quantile"] < 1.0 else m
            bonus = (H * em).sum() / em.sum().clamp(min=1.0) / f["gradient_accumulation_steps"]
        loss = loss - f["entropy_coef"] * bonus
    if f["selection"] == "positive_nll" and (nll := positive_nll(f, x, m, sel)) is not None:
        loss = loss + nll
    grad = None
    if backward:
        loss.backward()
        grad = x.grad
    with torch.no_grad():
        n = m.sum()
        rm = r.detach() * torch.ones_like(m)
        metrics["ratio/mean"] = (rm * m).sum() / n
        metrics["ratio/min"] = torch.where(m > 0, rm, math.inf).min()
        metrics["ratio/max"] = torch.where(m > 0, rm, -math.inf).max()
        metrics["ppo_kl"] = (-d.detach() * m).sum() / n
        if "kl" in metrics:
            metrics["kl"] = (metrics["kl"] * m).sum() / n
        if H is not None:
            metrics["entropy"] = (H * m).sum() / n
        if smp_w is not None:
            wm = smp_w * torch.ones_like(m)
            metrics["sampling/importance_sampling_ratio/mean"] = (wm * m).sum() / n
    return loss, grad, metrics
