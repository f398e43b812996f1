"""KD ablation in PyTorch: the experiments' MLP student and Hinton KD loss, trained from a teacher's
logits over the Fashion-MNIST training images, to explore settings quickly (about 20 s per run on
2 cores for the 784-128-10 student). It is a research aid, not the trainer: recipe results come
from `npm run experiments`.

    # teacher logits: train_teacher.py --save-train-logits writes <out>.train-logits.f32
    LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread /usr/bin/python3 scripts/teachers/kd_ablation.py \
        --teacher-logits /tmp/t.train-logits.f32 --temperature 4 --ce 0.1 --kd 0.9 --seeds 0,1
    ... --kd 0 --ce 1     # the same student from scratch (no teacher needed)

Inputs are pixels / 255 (as the trainer's MLP students), Adam 1e-3 with a cosine schedule over
every step, batch 128, PyTorch's default initialisation.
"""
import argparse
import gzip
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path: str, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--teacher-logits", help="float32 [60000, 10] file (train_teacher.py --save-train-logits)")
    p.add_argument("--temperature", type=float, default=4)
    p.add_argument("--ce", type=float, default=0.1)
    p.add_argument("--kd", type=float, default=0.9)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--hidden", default="128", help="comma-separated hidden widths")
    p.add_argument("--seeds", default="0")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    d = a.data
    xtr = torch.tensor(read_idx(f"{d}/train-images-idx3-ubyte.gz", 16).reshape(-1, 784) / 255.0, dtype=torch.float32)
    ytr = torch.tensor(read_idx(f"{d}/train-labels-idx1-ubyte.gz", 8).astype(np.int64))
    xte = torch.tensor(read_idx(f"{d}/t10k-images-idx3-ubyte.gz", 16).reshape(-1, 784) / 255.0, dtype=torch.float32)
    yte = torch.tensor(read_idx(f"{d}/t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))
    t = None
    if a.kd > 0:
        if not a.teacher_logits:
            raise SystemExit("kd > 0 needs --teacher-logits")
        t = torch.tensor(np.fromfile(a.teacher_logits, np.float32).reshape(len(ytr), -1))
        print(f"teacher: right on {(t.argmax(1) == ytr).float().mean().item() * 100:.2f} % of the training images")
    T = a.temperature
    results = []
    for seed in (int(s) for s in a.seeds.split(",")):
        torch.manual_seed(seed)
        layers, width = [], 784
        for h in (int(v) for v in a.hidden.split(",")):
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        model = nn.Sequential(*layers, nn.Linear(width, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.epochs * math.ceil(len(ytr) / 128))
        for _ in range(a.epochs):
            perm = torch.randperm(len(ytr))
            for i in range(0, len(ytr), 128):
                b = perm[i : i + 128]
                s = model(xtr[b])
                loss = a.ce * F.cross_entropy(s, ytr[b])
                if t is not None:
                    kl = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t[b] / T, 1), log_target=True, reduction="batchmean")
                    loss = loss + a.kd * T * T * kl
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item() * 100
            train_acc = (model(xtr).argmax(1) == ytr).float().mean().item() * 100
        results.append(acc)
        print(f"seed {seed}: test {acc:.2f} %, train {train_acc:.2f} %", flush=True)
    print(f"mean test accuracy {np.mean(results):.2f} % over {len(results)} seed(s)")


if __name__ == "__main__":
    main()
