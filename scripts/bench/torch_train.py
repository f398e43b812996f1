"""Peer for bench:trainer (and, with "device": "cuda", scripts/device/gpu-check.mjs): PyTorch training of the same MLP and CNN with the same KD loss
(T = 4, weights ce 1 + kd 1), batch 128, Adam, random inputs and teacher logits. Each rate is
the median of `runs` timings of `*_batches` steps, after a warm-up. Prints JSON. Which BLAS
it uses is decided by the caller (LD_LIBRARY_PATH)."""
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
device = torch.device(spec.get("device", "cpu"))
torch.manual_seed(0)


def mlp():
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))


def cnn():
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


def rate(model, batches):
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.rand(128, 784, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    t = torch.randn(128, 10, device=device) * 3
    T = 4.0

    def step():
        opt.zero_grad()
        s = model(x)
        kd = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), reduction="batchmean", log_target=True) * T * T
        loss = F.cross_entropy(s, y) + kd
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    sync()
    rates = []
    for _ in range(spec["runs"]):
        t0 = time.perf_counter()
        for _ in range(batches):
            step()
        sync()
        rates.append(128 * batches / (time.perf_counter() - t0))
    rates.sort()
    return rates[len(rates) // 2]


def sgemm_peak(n=2048, reps=5):
    """GFLOP/s of a square float32 matmul: the machine's practical peak for this BLAS."""
    a = torch.rand(n, n)
    b = torch.rand(n, n)
    torch.mm(a, b)
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


print(json.dumps({"mlp": rate(mlp(), spec["mlp_batches"]), "cnn": rate(cnn(), spec["cnn_batches"]), "sgemm_gflops": sgemm_peak() if spec.get("sgemm") else None,
                  "torch": torch.__version__, "threads": torch.get_num_threads()}))
