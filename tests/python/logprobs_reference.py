"""Independent float64 references of token log-probabilities, entropies and the logits gradient,
written from the formulas (softmax with max subtraction), never calling grpokit."""

import numpy as np


def _log_softmax(logits, temperature):
    """(log p for every entry, lse) in float64, log p = (x − max x)/τ − log Σ exp((x − max x)/τ):
    no cancellation between x/τ and lse, and no overflow of x/τ, at large magnitudes."""
    x = np.asarray(logits, dtype=np.float64)
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(invalid="ignore"):
        d = (x - m) / temperature
    log_s = np.log(np.exp(d).sum(-1, keepdims=True))
    return d - log_s, (m / temperature + log_s)[..., 0]


def ref_forward(logits, ids, temperature=1.0):
    """(logp, entropy, lse) in float64 for (..., V) logits."""
    logp_all, lse = _log_softmax(logits, temperature)
    p = np.exp(logp_all)
    with np.errstate(invalid="ignore"):
        plogp = np.where(p > 0, p * logp_all, 0.0)
    ids = np.asarray(ids)
    logp = np.take_along_axis(logp_all, ids[..., None], -1)[..., 0]
    return logp, -plogp.sum(-1), lse


def ref_backward(logits, ids, grad_logp, grad_entropy, temperature=1.0):
    """∂L/∂logits for L = Σ a·logp + b·entropy, in float64."""
    logp_all, _ = _log_softmax(logits, temperature)
    _, h, _ = ref_forward(logits, ids, temperature)
    p = np.exp(logp_all)
    a = np.asarray(grad_logp, dtype=np.float64)[..., None]
    b = np.asarray(grad_entropy, dtype=np.float64)[..., None]
    log_term = np.where(p > 0, logp_all, 0.0) + h[..., None]
    g = -p * (a + b * log_term)
    onehot = np.zeros_like(g)
    np.put_along_axis(onehot, np.asarray(ids)[..., None], 1.0, -1)
    return (g + a * onehot) / temperature


def rand_logits(rng, shape, scale=3.0, dtype=np.float64):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def ref_sum_sq_probs(logits, temperature=1.0):
    """Σ_v softmax(logits / temperature)_v² in float64: the probabilities squared and summed."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    m = np.max(z, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(z - m)
    p = e / e.sum(-1, keepdims=True)
    return (p * p).sum(-1)


def ref_sampler_keep(logits, temperature=1.0, top_k=None, top_p=None, min_p=None, convention="vllm"):
    """The sampler's kept set per row (bool (..., V)) and each row's nucleus margin, in float64, from
    docs/logprobs.md: min-p (p_v ≥ min_p·max p), top-k (values ≥ the k-th largest, ties kept), then
    top-p by the mass strictly above each value: vLLM over the survivors of the first two,
    renormalised, kept while < p; SGLang over the full distribution, kept while ≤ p. Sort-based.
    The margin is the distance of p·S from the nearest cumulative mass (tests skip rows where float32
    rounding could decide the boundary)."""
    logp_all, _ = _log_softmax(logits, temperature)
    x = np.asarray(logits, dtype=np.float64)
    lead, v = x.shape[:-1], x.shape[-1]
    x2, lp2 = x.reshape(-1, v), logp_all.reshape(-1, v)
    n = x2.shape[0]

    def per_row(a, default):
        return np.broadcast_to(np.asarray(default if a is None else a), lead).reshape(-1)

    ks, ps, mps = per_row(top_k, 0), per_row(top_p, 1.0), per_row(min_p, 0.0)
    keep = np.ones_like(x2, dtype=bool)
    margin = np.full(n, np.inf)
    for r in range(n):
        p = np.exp(lp2[r])
        early = np.ones(v, dtype=bool)
        if mps[r] > 0:
            early &= lp2[r] - lp2[r].max() >= np.log(mps[r])
        if 0 < ks[r] < v:
            early &= x2[r] >= np.sort(x2[r])[-ks[r]]
        keep[r] = early
        if ps[r] < 1:
            q = p * early if convention == "vllm" else p
            q = q / q.sum()
            values = np.unique(x2[r])[::-1]  # distinct values, descending
            group = np.array([q[x2[r] == w].sum() for w in values])
            above = np.concatenate([[0.0], np.cumsum(group)[:-1]])
            ok = above < ps[r] if convention == "vllm" else above <= ps[r]
            t = values[ok].min()
            keep[r] &= x2[r] >= t
            margin[r] = np.abs(np.concatenate([above, [above[-1] + group[-1]]]) - ps[r]).min()
    return keep.reshape(x.shape), margin.reshape(lead)


def ref_sampler_forward(logits, ids, keep, temperature=1.0):
    """(logp under the kept set, kept entropy, full entropy, log kept mass) in float64."""
    x = np.where(keep, np.asarray(logits, dtype=np.float64), -np.inf)
    logp, h_kept, _ = ref_forward(x, ids, temperature)
    _, h_full, _ = ref_forward(logits, ids, temperature)
    logp_all, _ = _log_softmax(logits, temperature)
    with np.errstate(divide="ignore"):
        mass = np.log(np.where(keep, np.exp(logp_all), 0.0).sum(-1))
    return logp, h_kept, h_full, mass


def ref_sampler_backward(logits, ids, keep, grad_logp, grad_entropy, temperature=1.0, entropy_over="full"):
    """∂L/∂logits with the kept set fixed: the logp part (and the entropy part for "sampler") is the
    softmax gradient of the logits with the dropped entries at −inf; a token outside gets none."""
    x = np.asarray(logits, dtype=np.float64)
    masked = np.where(keep, x, -np.inf)
    kept_y = np.take_along_axis(keep, np.asarray(ids)[..., None], -1)[..., 0]
    a = np.where(kept_y, np.asarray(grad_logp, dtype=np.float64), 0.0)
    b = np.asarray(grad_entropy, dtype=np.float64)
    zero = np.zeros_like(a)
    g = ref_backward(masked, ids, a, b if entropy_over == "sampler" else zero, temperature)
    if entropy_over == "full":
        g = g + ref_backward(x, ids, zero, b, temperature)
    return np.where(np.isfinite(masked) | (entropy_over == "full"), g, 0.0)


def ref_kl(logits, ref_logits, temperature=1.0):
    """KL(π ‖ π_ref) = Σ_v p_v (log p_v − log q_v) per row, in float64, from both log-softmaxes; terms
    with p_v = 0 are 0, a term with p_v > 0 and q_v = 0 is +inf."""
    logp_all, _ = _log_softmax(logits, temperature)
    logq_all, _ = _log_softmax(ref_logits, temperature)
    p = np.exp(logp_all)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (logp_all - logq_all), 0.0)
    return terms.sum(-1)


def ref_kl_backward(logits, ref_logits, grad_kl, temperature=1.0):
    """∂(Σ k·KL)/∂logits in float64: p_v·((log p_v − log q_v) − KL)·k/τ (the reference held fixed)."""
    logp_all, _ = _log_softmax(logits, temperature)
    logq_all, _ = _log_softmax(ref_logits, temperature)
    p = np.exp(logp_all)
    kl = ref_kl(logits, ref_logits, temperature)[..., None]
    k = np.asarray(grad_kl, dtype=np.float64)[..., None]
    with np.errstate(invalid="ignore"):
        g = np.where(p > 0, p * (logp_all - logq_all - kl), 0.0)
    return k * g / temperature
