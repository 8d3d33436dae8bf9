"""Independent fp64 NumPy reference of the GRPO-family losses, written from the formulas of
the peers (TRL 1.16.0, verl 0.9.1) and the hidden-biases paper's Table 1, as docs/losses.md states them.

It is written the way the peers write their losses (whole-array expressions, masks multiplied in),
not the way the engine is (per-row passes), and never calls the engine. Stop-gradient is modelled
explicitly: every detached quantity is computed from ``lp_sg`` (a frozen copy of logp), so a finite
difference in ``lp`` alone differentiates exactly what autograd would.
"""

from __future__ import annotations

import math

import numpy as np


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _quantile_linear(x, q):
    x = np.sort(x)
    pos = q * (len(x) - 1)
    lo, hi = int(math.floor(pos)), int(math.ceil(pos))
    return x[lo] + (x[hi] - x[lo]) * (pos - lo)


def _kl(est, lp, ref, log_clamp, value_clamp, straight_through, lp_sg):
    if est != "k3":  # verl clamps its low_var_kl (k3) only
        log_clamp = value_clamp = math.inf
    x = np.clip(ref - lp, -log_clamp, log_clamp)
    if est == "k1":
        k = -x
    elif est == "k2":
        k = 0.5 * x * x
    elif est == "k3":
        k = np.exp(x) - x - 1.0
    elif est == "abs":
        k = np.abs(x)
    else:
        raise ValueError(est)
    k = np.clip(k, -value_clamp, value_clamp)
    if straight_through:  # value of k, gradient of k2: k2 + sg(k − k2)
        k2 = 0.5 * (lp - ref) ** 2
        k2_sg = 0.5 * (lp_sg - ref) ** 2
        k_sg = _kl(est, lp_sg, ref, log_clamp, value_clamp, False, lp_sg)
        k = k2 + (k_sg - k2_sg)
    return k


def reference_loss(s, lp, old, A, mask, *, ref=None, H=None, smp=None, keep=None, tw=None, sel=None, lp_sg=None):
    """(loss, per_token φ) of LossSpec ``s`` in float64. ``lp_sg``: the frozen logp (default lp)."""
    f = lambda v, d: d if v is None else v  # noqa: E731
    inf = math.inf
    lp = np.asarray(lp, np.float64)
    lp_sg = lp.copy() if lp_sg is None else np.asarray(lp_sg, np.float64)
    old = lp_sg if old is None else np.asarray(old, np.float64)
    A = np.asarray(A, np.float64)
    A = A[:, None] * np.ones_like(lp) if A.ndim == 1 else A
    m = np.asarray(mask).astype(bool)
    if s.m2_threshold is not None:
        m = m & _m2po_keep(s.m2_threshold, lp_sg, old, smp, m)
    mf = m.astype(np.float64)
    B, T = lp.shape
    # padding may hold anything: replace it (selection, not multiplication)
    lp = np.where(m, lp, 0.0)
    lp_sg = np.where(m, lp_sg, 0.0)
    old = np.where(m, old, 0.0)
    A = np.where(m, A, 0.0)
    L = mf.sum(1)
    Lc = np.maximum(L, 1.0)

    d = lp - old
    d_sg = lp_sg - old
    lr_lo, lr_hi = f(s.log_ratio_min, -inf), f(s.log_ratio_max, inf)
    el, eh = s.epsilon_low, s.epsilon_high

    if s.surrogate == "geo_mean":  # verl GMPO
        sgn = np.sign(A)
        dc = np.clip(d, -el, eh)
        dhat = sgn * np.minimum(sgn * d, sgn * dc)
        Abar = (A * mf).sum(1) / Lc
        R = np.exp((dhat * mf).sum(1) / Lc)
        per_seq = -Abar * R
        phi = per_seq[:, None] * mf
        r = R[:, None] * np.ones_like(lp)
        r_sg = None
    else:
        if s.ratio == "token":
            r = np.exp(np.clip(d, lr_lo, lr_hi))
            r_sg = np.exp(np.clip(d_sg, lr_lo, lr_hi))
        elif s.ratio in ("sequence", "sequence_sum"):
            scale = 1.0 / Lc if s.ratio == "sequence" else np.ones(B)
            u = (d * mf).sum(1) * scale
            u_sg = (d_sg * mf).sum(1) * scale
            r = np.exp(np.clip(u, lr_lo, lr_hi))[:, None] * np.ones_like(lp)
            r_sg = np.exp(np.clip(u_sg, lr_lo, lr_hi))[:, None] * np.ones_like(lp)
        elif s.ratio == "sequence_token":  # exp(sg(log s_i) + ℓ − sg ℓ), log clamped
            u_sg = (d_sg * mf).sum(1) / Lc
            x = u_sg[:, None] + lp - lp_sg
            r = np.exp(np.clip(x, lr_lo, lr_hi))
            r_sg = np.exp(np.clip(u_sg[:, None] * np.ones_like(lp), lr_lo, lr_hi))
        else:
            raise ValueError(s.ratio)

        if s.surrogate == "clip":
            delta = f(s.delta, inf)
            c = f(s.clip_ratio_c, inf)
            rt = np.minimum(r, delta)
            rc = np.clip(r, 1 - el, 1 + eh)
            pg = np.maximum(-A * rt, -A * rc)
            pg = np.where(A < 0, np.minimum(pg, np.where(A < 0, -A * min(c, 1e300), 0.0)), pg)
        elif s.surrogate == "unclipped":
            pg = -A * r
        elif s.surrogate == "sapo":
            tau = np.where(A > 0, s.sapo_temperature_pos, s.sapo_temperature_neg)
            pg = -(4.0 / tau) * _sigmoid(tau * (r - 1.0)) * A
        elif s.surrogate == "logp":
            w = {
                "one": lambda: np.ones_like(lp),
                "ratio": lambda: r_sg,
                "clip": lambda: np.clip(r_sg, 1 - el, 1 + eh),
                "cap": lambda: np.minimum(r_sg, eh),
                "dppo_tv": lambda: _dppo(lp_sg, old, A, el, eh, "tv") * np.minimum(r_sg, f(s.clip_ratio_c, inf)),
                "dppo_kl": lambda: _dppo(lp_sg, old, A, el, eh, "kl") * np.minimum(r_sg, f(s.clip_ratio_c, inf)),
                "vespo": lambda: None,
                "topr": lambda: np.where(A > 0, 1.0, np.clip(r_sg, 0.0, 1.0)),
            }[s.logp_weight]()
            if s.logp_weight == "vespo":
                w = _vespo(s, lp_sg, old, A, m, smp)
            pg = -w * A * lp
        else:
            raise ValueError(s.surrogate)
        phi = pg * _trust_region(s.trust_region, r_sg, lp_sg, old, A, el, eh)

    # weight rule (TRL order: OPSM → entropy mask → sampler IS; plus keep flags, λ, CPPO)
    w_rule = np.ones_like(lp)
    if keep is not None:
        w_rule = w_rule * np.asarray(keep, np.float64)[:, None]
    if tw is not None:
        w_rule = w_rule * np.where(m, np.asarray(tw, np.float64), 0.0)
    if s.prune_threshold is not None:
        w_rule = w_rule * (np.abs(A) > s.prune_threshold)
    if s.off_policy_mask_threshold is not None:
        src = old if smp is None else np.where(m, np.nan_to_num(np.asarray(smp, np.float64), nan=np.nan), 0.0)
        kl_div = np.nan_to_num(src - lp_sg, nan=0.0)
        avg = (kl_div * mf).sum(1, keepdims=True) / Lc[:, None]
        w_rule = w_rule * ((A >= 0) | (avg <= s.off_policy_mask_threshold))
    ent_mask = np.ones_like(lp, dtype=bool)
    if s.top_entropy_quantile < 1.0:
        Hm = np.asarray(H, np.float64)
        thr = _quantile_linear(Hm[m], 1.0 - s.top_entropy_quantile)
        ent_mask = (np.where(m, Hm, 0.0) >= thr) & m
        w_rule = w_rule * ent_mask
    if s.sampler_is != "none" and smp is not None and s.logp_weight != "vespo":
        w_rule = w_rule * _sampler_is(s, old, smp, m)
    if s.selection == "clip_cov":
        w_rule = w_rule * ~np.asarray(sel, bool)
    phi = phi * w_rule
    if s.surrogate == "geo_mean":
        phi = phi  # GMPO's weights act per token on the per-sequence value (no weight inputs used in tests)

    # regularisers
    if s.kl != "none" and s.beta != 0.0:
        k = _kl(
            s.kl,
            lp,
            np.where(m, np.asarray(ref, np.float64), 0.0),
            f(s.kl_log_clamp, inf),
            f(s.kl_value_clamp, inf),
            s.kl_straight_through,
            lp_sg,
        )
        if s.kl_is_corrected:
            k = k * r
        phi = phi + s.beta * k
    if s.gtpo_entropy and s.beta != 0.0 and H is not None:
        Hm = np.where(m, np.asarray(H, np.float64), 0.0)
        hbar = (Hm * mf).sum(1) / Lc
        kp = np.ones(B) if keep is None else np.asarray(keep, np.float64)
        lam = np.ones_like(lp) if tw is None else np.where(m, np.asarray(tw, np.float64), 0.0)
        phi = phi + s.beta * (kp * hbar)[:, None] * np.exp(d) * lam
    if s.selection == "kl_cov":
        phi = phi + s.ppo_kl_coef * np.abs(d) * np.asarray(sel, bool)
    if s.dro_beta != 0.0:
        phi = phi + 0.5 * s.dro_beta * d * d

    phi = phi * mf
    loss = _aggregate(s, phi, mf, L)
    if s.entropy_coef != 0.0:
        Hm = np.where(m, np.asarray(H, np.float64), 0.0)
        if s.entropy_aggregation == "policy":
            loss = loss - s.entropy_coef * _aggregate(s, Hm * mf, mf, L)
        else:
            em = mf * ent_mask
            loss = loss - s.entropy_coef * (Hm * em).sum() / max(em.sum(), 1.0) / s.gradient_accumulation_steps
    if s.selection == "positive_nll":  # VAPO: μ·mean(−ℓ) over the selected tokens, outside φ
        pm = mf * np.asarray(sel, bool)
        scale = s.dp_size / (s.gradient_accumulation_steps if s.divide_by_ga else 1.0)
        if pm.sum() > 0:
            loss = loss + s.positive_example_nll_weight * scale * (-lp * pm).sum() / pm.sum()
    return loss, phi


def _aggregate(s, phi, mf, L):
    B = phi.shape[0]
    scale = s.dp_size / (s.gradient_accumulation_steps if s.divide_by_ga else 1.0)
    n_tok = max(s.num_items_in_batch if s.num_items_in_batch is not None else mf.sum(), 1.0)
    if s.num_sequences is not None:
        n_seq = s.num_sequences
    else:
        n_seq = max(float((L > 0).sum()) if s.seq_count_nonempty else float(B), 1.0)
    row = phi.sum(1)
    if s.aggregation == "token_mean":
        return scale * row.sum() / n_tok
    if s.aggregation == "token_sum":
        return scale * row.sum()
    if s.aggregation == "seq_mean_token_mean":
        den = np.maximum(L, 1.0)
        return scale * (row / den).sum() / n_seq
    if s.aggregation == "seq_mean_token_sum":
        return scale * row.sum() / n_seq
    if s.aggregation == "seq_mean_token_sum_norm":
        return scale * row.sum() / (n_seq * s.max_completion_length)
    if s.aggregation == "prompt_mean":  # SkyRL: token mean inside each prompt group, mean over prompts
        G = int(s.group_size)
        groups = [slice(g, g + G) for g in range(0, B, G)]
        n_prompt = s.num_prompts if s.num_prompts is not None else len(groups)
        per_prompt = [row[g].sum() / max(mf[g].sum(), 1.0) for g in groups]
        return scale * sum(per_prompt) / max(n_prompt, 1.0)
    raise ValueError(s.aggregation)


def _sampler_is(s, old, smp, m):
    mf = m.astype(np.float64)
    diff = np.nan_to_num((old - np.where(m, np.asarray(smp, np.float64), 0.0)) * mf, nan=0.0)
    if s.sampler_is.startswith("sequence"):
        diff = diff.sum(1, keepdims=True)
    rho = np.exp(diff)
    lo = -math.inf if s.is_min is None else s.is_min
    hi = math.inf if s.is_max is None else s.is_max
    if s.sampler_is.endswith("truncate"):
        return np.clip(rho, lo, hi)
    return np.where((rho < lo) | (rho > hi), 0.0, rho)


def _vespo(s, lp_sg, old, A, m, smp):
    mf = m.astype(np.float64)
    lw = (np.clip(lp_sg - old, -20, 20) * mf).sum(1, keepdims=True)
    if smp is not None and s.sampler_is != "none":
        rho = _sampler_is(s, old, smp, m)
        with np.errstate(divide="ignore"):
            lw = lw + (np.clip(np.log(rho), math.log(1e-8), 20.0) * mf).sum(1, keepdims=True)
    lw = np.clip(lw, math.log(1e-8), 20.0)
    pos = A >= 0
    k = np.where(pos, s.vespo_k_pos, s.vespo_k_neg)
    lam = np.maximum(np.where(pos, s.vespo_lambda_pos, s.vespo_lambda_neg), 1e-4)
    phi = np.exp(lam + k * lw - lam * np.exp(lw))
    return np.nan_to_num(phi, nan=0.0, posinf=0.0, neginf=0.0)


def _dppo(lp, old, A, el, eh, kind):
    p, po = np.exp(lp), np.exp(old)
    if kind == "tv":
        return np.where(A > 0, p - po <= eh, p - po >= -el).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # p = 1 only at padding
        b = po * (old - lp) + (1 - po) * np.log((1 - po + 1e-8) / (1 - p + 1e-8))
    return np.where(A > 0, (b <= eh) | (p <= po), (b <= el) | (p >= po)).astype(np.float64)


def _trust_region(kind, r, lp, old, A, el, eh):
    """1 where the token's policy term is kept (ROLL's unified CISPO mask; prime-rl default and ipo)."""
    if kind == "none":
        return 1.0
    if kind == "ppo":
        return (~(((A > 0) & (r > 1 + eh)) | ((A < 0) & (r < 1 - el)))).astype(np.float64)
    if kind == "dppo_tv":
        return _dppo(lp, old, A, el, eh, "tv")
    dp = np.exp(lp) - np.exp(old)
    return ((dp >= -el) & (dp <= eh)).astype(np.float64)


def fd_grad(fun, x, h=1e-6):
    """Central finite differences of a scalar function of an array."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (fun(xp) - fun(xm)) / (2 * h)
    return g


def _m2po_keep(threshold, lp, old, smp, m):
    """M2PO: sort the valid tokens' (log r)² in decreasing order, drop the first k, k the least index whose
    suffix mean is < threshold (n − 1 if none); tokens tied with the first kept one stay."""
    with np.errstate(invalid="ignore"):
        d = (old - np.asarray(smp, np.float64)) if smp is not None else (lp - old)
    m2 = np.where(m & ~np.isnan(d), d, 0.0) ** 2
    x = np.sort(m2[m])[::-1]
    n = x.size
    if n == 0:
        return m
    suffix_mean = np.cumsum(x[::-1])[::-1] / np.arange(n, 0, -1)
    below = np.nonzero(suffix_mean < threshold)[0]
    k = int(below[0]) if below.size else n - 1
    return m & (m2 <= x[k])
