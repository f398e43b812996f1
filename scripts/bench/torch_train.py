"""Peer for bench:trainer (and, with "device": "cuda", scripts/device/gpu-check.mjs): PyTorch training of the same MLP and CNN with the same KD loss
(T = 4, weights ce 1 + kd 1), batch 128, Adam, random inputs and teacher logits. Which BLAS it
uses is decided by the caller (LD_LIBRARY_PATH).

Two modes:
  torch_train.py '<json spec>'   one shot: the MLP and CNN rates with spec["optimizer"] (default
                                 "adam"), each the median of `runs` timings of `*_batches` steps
                                 after a warm-up; prints one JSON line.
  torch_train.py --serve         one JSON command per stdin line, one JSON answer per line, so the
                                 caller can interleave these timings with its own in one run while
                                 models, optimizers and torch.compile's compiled code stay warm:
                                 {"threads": 2}  → {"torch": version, "threads": n}
                                 {"model": "mlp"|"cnn", "config": "adam"|"fused"|"fused+compile",
                                  "batches": n}  → {"rate": samples/s of one timing of n steps}
                                 {"sgemm": true} → {"sgemm_gflops": best 2048² matmul}

Configurations (a practitioner's choices, not ours): "adam" is torch.optim.Adam at its defaults
(the foreach implementation); "fused" is Adam(fused=True), documented for CPU since 2.4;
"fused+compile" also wraps the model and loss in torch.compile (inductor, gcc here).
"""
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

device = torch.device("cpu")
T = 4.0


def mlp():
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))


def cnn():
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10),
    )


MODELS = {"mlp": mlp, "cnn": cnn}


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_step(model_name, config):
    """One train step (forward, KD + CE, backward, Adam) of a fresh model, warmed up."""
    torch.manual_seed(0)
    model = MODELS[model_name]().to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3, fused=config.startswith("fused"))
    x = torch.rand(128, 784, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    t = torch.randn(128, 10, device=device) * 3

    def loss_of():
        s = model(x)
        kd = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), reduction="batchmean", log_target=True) * T * T
        return F.cross_entropy(s, y) + kd

    forward = torch.compile(loss_of) if config.endswith("+compile") else loss_of

    def step():
        opt.zero_grad()
        forward().backward()
        opt.step()

    for _ in range(3):
        step()
    sync()
    return step


def timing(step, batches):
    t0 = time.perf_counter()
    for _ in range(batches):
        step()
    sync()
    return 128 * batches / (time.perf_counter() - t0)


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


def serve():
    steps = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        if "threads" in cmd:
            torch.set_num_threads(cmd["threads"])
            out = {"torch": torch.__version__, "threads": torch.get_num_threads()}
        elif "sgemm" in cmd:
            out = {"sgemm_gflops": sgemm_peak()}
        else:
            key = (cmd["model"], cmd["config"])
            if key not in steps:
                steps[key] = make_step(*key)
            out = {"rate": timing(steps[key], cmd["batches"])}
        print(json.dumps(out), flush=True)


def one_shot(spec):
    global device
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec.get("device", "cpu"))
    config = spec.get("optimizer", "adam")

    def rate(name, batches):
        step = make_step(name, config)
        rates = sorted(timing(step, batches) for _ in range(spec["runs"]))
        return rates[len(rates) // 2]

    print(json.dumps({"mlp": rate("mlp", spec["mlp_batches"]), "cnn": rate("cnn", spec["cnn_batches"]),
                      "sgemm_gflops": sgemm_peak() if spec.get("sgemm") else None,
                      "torch": torch.__version__, "threads": torch.get_num_threads(), "optimizer": config}))


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve()
    else:
        one_shot(json.loads(sys.argv[1]))
