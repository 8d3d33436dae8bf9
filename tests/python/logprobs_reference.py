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
