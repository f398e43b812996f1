"""Reference values for the trainer's loss functions, computed in float64 with numpy straight
from the formulas in the papers (not from the TypeScript code). Run:

    python3 trainer/golden/losses.py > trainer/src/losses/golden.json
"""
import json

import numpy as np

rng = np.random.default_rng(20261128)
N, C = 5, 7
student = rng.normal(0, 2.0, (N, C))
teacher = rng.normal(0, 3.0, (N, C))
labels = rng.integers(0, C, N)


def log_softmax(z):
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def softmax(z):
    return np.exp(log_softmax(z))


def kl_rows(p, q):
    """Σ p (log p − log q) per row, 0·log 0 = 0."""
    out = np.zeros(p.shape[0])
    for n in range(p.shape[0]):
        for c in range(p.shape[1]):
            if p[n, c] > 0:
                out[n] += p[n, c] * (np.log(p[n, c]) - np.log(q[n, c]))
    return out


def kd(s, t, T):
    return T * T * kl_rows(softmax(t / T), softmax(s / T)).mean()


def dkd(s, t, y, alpha, beta, T):
    ps, pt = softmax(s / T), softmax(t / T)
    tckd, nckd = [], []
    for n in range(N):
        bs = np.array([ps[n, y[n]], 1 - ps[n, y[n]]])
        bt = np.array([pt[n, y[n]], 1 - pt[n, y[n]]])
        tckd.append((bt * (np.log(bt) - np.log(bs))).sum())
        keep = [c for c in range(C) if c != y[n]]
        qs = ps[n, keep] / ps[n, keep].sum()
        qt = pt[n, keep] / pt[n, keep].sum()
        nckd.append((qt * (np.log(qt) - np.log(qs))).sum())
    return T * T * (alpha * np.mean(tckd) + beta * np.mean(nckd))


def nkd(s, t, y, T, gamma):
    ps1, pt1 = softmax(s), softmax(t)
    target = -np.mean([pt1[n, y[n]] * np.log(ps1[n, y[n]]) for n in range(N)])
    non = []
    for n in range(N):
        keep = [c for c in range(C) if c != y[n]]
        qs = softmax((s[n, keep] / T)[None, :])[0]
        qt = softmax((t[n, keep] / T)[None, :])[0]
        non.append((qt * np.log(qs)).sum())
    return target - gamma * T * T * np.mean(non)


def pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-8)


def dist(s, t, beta, gamma, T):
    ys, yt = softmax(s / T), softmax(t / T)
    inter = 1 - np.mean([pearson(ys[n], yt[n]) for n in range(N)])
    intra = 1 - np.mean([pearson(ys[:, c], yt[:, c]) for c in range(C)])
    return T * T * (beta * inter + gamma * intra)


def standardize(z):
    return (z - z.mean(axis=1, keepdims=True)) / (z.std(axis=1, ddof=1, keepdims=True) + 1e-7)


def topk_kd(s, t, T, k):
    """KL between teacher and student coarsened to the teacher's top-k classes plus a tail."""
    pt, ps = softmax(t / T), softmax(s / T)
    out = []
    for n in range(N):
        idx = np.argsort(-t[n], kind="stable")[:k]
        rest = [c for c in range(C) if c not in idx]
        p = np.append(pt[n, idx], pt[n, rest].sum())
        q = np.append(ps[n, idx], ps[n, rest].sum())
        out.append(sum(p[i] * (np.log(p[i]) - np.log(q[i])) for i in range(len(p)) if p[i] > 0))
    return T * T * np.mean(out)


def topk_buckets(s, t, T, k):
    """Teacher and student distributions over the teacher's top-k classes plus one tail bucket, [N, k + 1]."""
    pt, ps = softmax(t / T), softmax(s / T)
    P, Q = [], []
    for n in range(N):
        idx = np.argsort(-t[n], kind="stable")[:k]
        rest = [c for c in range(C) if c not in idx]
        P.append(np.append(pt[n, idx], pt[n, rest].sum()))
        Q.append(np.append(ps[n, idx], ps[n, rest].sum()))
    return np.array(P), np.array(Q)


def topk_rkl(s, t, T, k):
    """Reverse KL between the coarsened distributions: KL(Q_k ‖ P_k)."""
    p, q = topk_buckets(s, t, T, k)
    return T * T * kl_rows(q, p).mean()


def topk_jsd(s, t, beta, T, k):
    """Generalized JSD between the coarsened distributions."""
    p, q = topk_buckets(s, t, T, k)
    m = beta * p + (1 - beta) * q
    return T * T * (beta * kl_rows(p, m) + (1 - beta) * kl_rows(q, m)).mean()


def multi(s, teachers, T):
    terms = []
    for logits, idx in teachers:
        q = softmax(s[:, idx] / T)
        p = softmax(logits / T)
        terms.append(kl_rows(p, q).mean())
    return T * T * np.mean(terms)


def rkl(s, t, T):
    """Reverse KL: KL(student ‖ teacher)."""
    return T * T * kl_rows(softmax(s / T), softmax(t / T)).mean()


def jsd(s, t, beta, T):
    """Generalized JSD (GKD, Agarwal et al. 2024, eq. 2): β KL(P‖M) + (1 − β) KL(Q‖M), M = βP + (1 − β)Q."""
    p, q = softmax(t / T), softmax(s / T)
    m = beta * p + (1 - beta) * q
    return T * T * (beta * kl_rows(p, m) + (1 - beta) * kl_rows(q, m)).mean()


def tvd(s, t, T):
    """Total variation distance: ½ Σ |p − q|."""
    return (0.5 * np.abs(softmax(t / T) - softmax(s / T)).sum(axis=1)).mean()


def sampled_kd(s, counts, n, t, T):
    """Sampled KD (Anshumann et al. 2025): T² · mean over rows of Σ (c/n)·(log p − log q), p = softmax(t/T)."""
    w = counts / n
    return T * T * np.mean((w * (log_softmax(t / T) - log_softmax(s / T))).sum(axis=1))


def at_map(x):
    """Attention map (Zagoruyko & Komodakis 2017, p = 2): mean over channels of x², flattened, unit L2 norm (ε 1e-12)."""
    q = (x ** 2).mean(axis=1).reshape(x.shape[0], -1)
    return q / np.sqrt((q ** 2).sum(axis=1, keepdims=True) + 1e-12)


def hint_at(s, t):
    return ((at_map(s) - at_map(t)) ** 2).mean(axis=1).mean()


def hint_mse(s, t):
    return ((s.reshape(s.shape[0], -1) - t.reshape(t.shape[0], -1)) ** 2).mean(axis=1).mean()


def hint_cosine(s, t):
    a, b = s.reshape(s.shape[0], -1), t.reshape(t.shape[0], -1)
    na = np.sqrt((a ** 2).sum(axis=1) + 1e-12)
    nb = np.sqrt((b ** 2).sum(axis=1) + 1e-12)
    return (1 - (a * b).sum(axis=1) / (na * nb)).mean()


def grad_nd(f, s, h=1e-6):
    """dL/ds for an s of any shape, by central differences in float64."""
    g = np.zeros_like(s)
    for idx in np.ndindex(*s.shape):
        up, down = s.copy(), s.copy()
        up[idx] += h
        down[idx] -= h
        g[idx] = (f(up) - f(down)) / (2 * h)
    return g.tolist()


def grad(f, s, h=1e-6):
    """dL/ds by central differences in float64 (an independent check of the engines' gradients)."""
    g = np.zeros_like(s)
    for i in range(s.shape[0]):
        for j in range(s.shape[1]):
            up, down = s.copy(), s.copy()
            up[i, j] += h
            down[i, j] -= h
            g[i, j] = (f(up) - f(down)) / (2 * h)
    return g.tolist()


tA = rng.normal(0, 2.5, (N, 3))
tB = rng.normal(0, 2.5, (N, 4))
T = 4.0
# 12 draws per row from softmax(teacher / 2), as a sampled token cache stores them (drawn after
# the arrays above, so their values do not change).
SAMPLES = 12
counts = np.stack([rng.multinomial(SAMPLES, softmax(teacher / 2.0)[n]) for n in range(N)]).astype(float)
# Hint losses (drawn after everything above): student and teacher maps [N, C, 4, 4] with different
# channel counts for AT, same-shape maps for FitNets, vectors for the embedding loss.
s_map = rng.normal(0, 1.0, (N, 3, 4, 4))
t_map = rng.normal(0, 1.0, (N, 2, 4, 4))
fit_t = rng.normal(0, 1.0, (N, 3, 4, 4))
s_vec = rng.normal(0, 1.0, (N, 6))
t_vec = rng.normal(0, 1.0, (N, 6))
print(
    json.dumps(
        {
            "student": student.tolist(),
            "teacher": teacher.tolist(),
            "labels": labels.tolist(),
            "kd_T1": kd(student, teacher, 1.0),
            "kd_T4": kd(student, teacher, T),
            "dkd": dkd(student, teacher, labels, 1.0, 8.0, T),
            "nkd": nkd(student, teacher, labels, T, 1.5),
            "dist": dist(student, teacher, 1.0, 2.0, T),
            "lskd": kd(standardize(student), standardize(teacher), 2.0),
            "topk3": topk_kd(student, teacher, T, 3),
            "topk7": topk_kd(student, teacher, T, 7),
            "topk3_rkl": topk_rkl(student, teacher, T, 3),
            "topk3_jsd": topk_jsd(student, teacher, 0.3, T, 3),
            "ce": float(np.mean([-log_softmax(student)[n, labels[n]] for n in range(N)])),
            "multi": {"a": tA.tolist(), "a_idx": [0, 2, 4], "b": tB.tolist(), "b_idx": [1, 3, 5, 6], "value": multi(student, [(tA, [0, 2, 4]), (tB, [1, 3, 5, 6])], T)},
            "rkl": rkl(student, teacher, 2.0),
            "jsd": jsd(student, teacher, 0.3, 2.0),
            "tvd": tvd(student, teacher, 2.0),
            "sampled": {"counts": counts.tolist(), "n": SAMPLES, "value": sampled_kd(student, counts, SAMPLES, teacher, 2.0)},
            "hints": {
                "s_map": s_map.tolist(),
                "t_map": t_map.tolist(),
                "fit_t": fit_t.tolist(),
                "s_vec": s_vec.tolist(),
                "t_vec": t_vec.tolist(),
                "at": hint_at(s_map, t_map),
                "fitnets": hint_mse(s_map, fit_t),
                "embed_mse": hint_mse(s_vec, t_vec),
                "embed_cosine": hint_cosine(s_vec, t_vec),
                "grad": {
                    "at": grad_nd(lambda s: hint_at(s, t_map), s_map),
                    "fitnets": grad_nd(lambda s: hint_mse(s, fit_t), s_map),
                    "embed_mse": grad_nd(lambda s: hint_mse(s, t_vec), s_vec),
                    "embed_cosine": grad_nd(lambda s: hint_cosine(s, t_vec), s_vec),
                },
            },
            # dL/dstudent of each loss, same params as its value above.
            "grad": {
                "kd_T4": grad(lambda s: kd(s, teacher, T), student),
                "dkd": grad(lambda s: dkd(s, teacher, labels, 1.0, 8.0, T), student),
                "nkd": grad(lambda s: nkd(s, teacher, labels, T, 1.5), student),
                "dist": grad(lambda s: dist(s, teacher, 1.0, 2.0, T), student),
                "lskd": grad(lambda s: kd(standardize(s), standardize(teacher), 2.0), student),
                "topk3": grad(lambda s: topk_kd(s, teacher, T, 3), student),
                "topk3_rkl": grad(lambda s: topk_rkl(s, teacher, T, 3), student),
                "topk3_jsd": grad(lambda s: topk_jsd(s, teacher, 0.3, T, 3), student),
                "multi": grad(lambda s: multi(s, [(tA, [0, 2, 4]), (tB, [1, 3, 5, 6])], T), student),
                "ce": grad(lambda s: float(np.mean([-log_softmax(s)[n, labels[n]] for n in range(N)])), student),
                "rkl": grad(lambda s: rkl(s, teacher, 2.0), student),
                "jsd": grad(lambda s: jsd(s, teacher, 0.3, 2.0), student),
                "tvd": grad(lambda s: tvd(s, teacher, 2.0), student),
                "sampled": grad(lambda s: sampled_kd(s, counts, SAMPLES, teacher, 2.0), student),
            },
        },
        indent=1,
    )
)
