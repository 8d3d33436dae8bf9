"""Independent fp64 references of the advantage estimators: loops written straight from the peers'
definitions (docs/estimators.md), never calling the engine. Used by test_estimators.py."""

import math

import numpy as np


def groups(B, G):
    return [list(range(s, s + G)) for s in range(0, B, G)]


def ref_combine(r, w=None):
    r = np.asarray(r, float)
    if r.ndim == 1:
        return r.copy()
    w = np.ones(r.shape[1]) if w is None else np.asarray(w, float)
    out = np.empty(r.shape[0])
    for i in range(r.shape[0]):
        ok = ~np.isnan(r[i])
        out[i] = np.sum(w[ok] * r[i][ok]) if ok.any() else np.nan
    return out


def sample_std(x):
    x = x[~np.isnan(x)]
    return math.sqrt(np.sum((x - x.mean()) ** 2) / (len(x) - 1)) if len(x) > 1 else 0.0


def ref_whiten(x, w):
    """verl_F.masked_whiten of a broadcast per-row value x_i over a mask with row weights w_i."""
    n = np.sum(w)
    mean = np.sum(w * x) / (n + 1e-8)
    var = np.sum(w * (x - mean) ** 2) / (n + 1e-8) * n / (n - 1)
    return (x - mean) / math.sqrt(var + 1e-8)


def ref_rloo(R, G, normalize=False, eps=1e-4):
    A = np.full(len(R), np.nan)
    for g in groups(len(R), G):
        valid = [i for i in g if not np.isnan(R[i])]
        if len(valid) < 2:
            continue
        s = sum(R[j] for j in valid)
        for i in valid:
            A[i] = R[i] - (s - R[i]) / (len(valid) - 1)
    if normalize:
        a = A[~np.isnan(A)]
        A = (A - a.mean()) / (sample_std(a) + eps) if len(a) > 1 else np.full(len(A), np.nan)
    return np.nan_to_num(A, nan=0.0)


def ref_rpp_baseline(R, G, L):
    c = np.array(R, float)
    for g in groups(len(R), G):
        c[g] = c[g] - np.mean(c[g])
    return ref_whiten(c, np.asarray(L, float))


def ref_reinforce_pp(r, m, gamma):
    B, T = r.shape
    ret = np.zeros((B, T))
    for i in range(B):
        running = 0.0
        for t in reversed(range(T)):
            new = r[i, t] + gamma * running
            ret[i, t] = new * m[i, t]
            running = new * m[i, t] + running * (1 - m[i, t])
    n = m.sum()
    mean = (ret * m).sum() / (n + 1e-8)
    var = (((ret - mean) ** 2) * m).sum() / (n + 1e-8) * n / (n - 1)
    return (ret - mean) / math.sqrt(var + 1e-8) * m, ret


def ref_reward_to_go(r, m):
    return np.flip(np.cumsum(np.flip(r * m, -1), -1), -1)


def ref_remax(r, m, b):
    G = ref_reward_to_go(r, m)
    return (G - b[:, None]) * m, G


def ref_opo(R, G, L):
    A = np.empty(len(R))
    for g in groups(len(R), G):
        base = sum(L[j] * R[j] for j in g) / sum(L[j] for j in g)
        A[g] = R[g] - base
    return A


def ref_passk(R, G, std=True, eps=1e-6):
    A = np.zeros(len(R))
    for g in groups(len(R), G):
        x = R[g]
        best = g[int(np.argmax(x))]
        second = np.sort(x)[-2]
        adv = R[best] - second
        A[best] = adv / (sample_std(x) + eps) if std else adv
    return A


def ref_gpg(R, G, f_norm=1.0):
    alpha = len(R) / max(np.count_nonzero(R), 1)
    A = np.empty(len(R))
    for g in groups(len(R), G):
        A[g] = alpha * (R[g] - R[g].mean()) / f_norm
    return A


def ref_gdpo(Rk, G, w, L, eps=1e-6):
    S = np.zeros(Rk.shape[0])
    for k in range(Rk.shape[1]):
        for g in groups(Rk.shape[0], G):
            x = Rk[g, k]
            S[g] += w[k] * (x - x.mean()) / (sample_std(x) + eps)
    return ref_whiten(S, np.asarray(L, float))


def ref_otb(r, m, G, logp, sps, rho=None, zero_tail=True, eps=1e-8):
    ret = ref_reward_to_go(r, m)
    w = 1 - 2 * np.exp(logp) + sps
    if rho is not None:
        w = w * rho**2
    W = np.cumsum(w * m, -1)
    base = np.zeros_like(ret)
    for g in groups(r.shape[0], G):
        num = (ret[g] * W[g] * m[g]).sum(0)
        den = (W[g] * m[g]).sum(0) + eps
        base[g] = num / den
        lens = m[g].sum(-1)
        srt = np.sort(lens)
        longest = np.flatnonzero(lens == srt[-1])
        if zero_tail and len(longest) == 1 and srt[-1] > srt[-2]:
            base[g[longest[0]], int(srt[-2]) :] = 0.0
    return (ret - base) * m, ret
