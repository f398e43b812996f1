"""Train a Fashion-MNIST teacher CNN with PyTorch (CPU) and export it to ONNX.

This is the script that reproduces the teachers shipped in models/ (see models/README.md).
It needs Debian's PyTorch (`apt-get install python3-torch`), run with /usr/bin/python3. Debian's
reference BLAS makes the dense layers slow; with `apt-get install libopenblas0-pthread`, prefix
the command with LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread to use OpenBLAS
for that process only.

    /usr/bin/python3 scripts/teachers/train_teacher.py --out models/fmnist-teacher
    /usr/bin/python3 scripts/teachers/train_teacher.py --out models/fmnist-teacher-0-4 --classes 0-4
    /usr/bin/python3 scripts/teachers/train_teacher.py --out models/fmnist-teacher-600 --labels 600

--classes trains on the images of those classes only, with that many outputs (a teacher that
has never seen the other classes). --labels N trains on the first N/10 images of each class in
the train split (the same rows as the experiments' labelled split).
It writes <out>.onnx, the sidecar <out>.json the server reads (classes, normalisation, layout)
and <out>.metrics.json with the test accuracy on the classes it knows.
"""
import argparse
import gzip
import inspect
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN, STD = 0.2860, 0.3530  # train-split pixel statistics on [0, 1]


def read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


class Teacher(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 32, 3, padding=1)
        self.b1 = nn.BatchNorm2d(32)
        self.c2 = nn.Conv2d(32, 64, 3, padding=1)
        self.b2 = nn.BatchNorm2d(64)
        self.c3 = nn.Conv2d(64, 64, 3, padding=1)
        self.b3 = nn.BatchNorm2d(64)
        self.f1 = nn.Linear(64 * 7 * 7, 256)
        self.drop = nn.Dropout(0.3)
        self.f2 = nn.Linear(256, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
        h = F.relu(self.b2(self.c2(h)))
        h = F.max_pool2d(F.relu(self.b3(self.c3(h))), 2)
        h = self.drop(F.relu(self.f1(h.flatten(1))))
        return self.f2(h)


def balanced_subset(labels: np.ndarray, n: int) -> np.ndarray:
    """The first n/10 images of each class, in file order: the same rows as the demo's
    `--labelled` split (Fashion-MNIST's file order is already shuffled)."""
    per = n // 10
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:per] for c in range(10)]))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to 2 pixels (zero padding)."""
    n = x.shape[0]
    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (2, 2, 2, 2))
    dx, dy = torch.randint(0, 5, (2,), generator=gen).tolist()
    return padded[:, :, dy : dy + 28, dx : dx + 28]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--out", required=True)
    p.add_argument("--classes", default="0-9", help="a range a-b of class indices")
    p.add_argument("--labels", type=int, default=0, help="train on this many labelled images only")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--label-smoothing", type=float, default=0.05)
    p.add_argument("--no-augment", action="store_true", help="train without the random flips and shifts")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--save-train-logits", action="store_true", help="also write <out>.train-logits.f32: the logits over the (un-augmented) training images, float32, row-major [N, C]")
    a = p.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    lo, hi = (int(v) for v in a.classes.split("-"))
    keep = list(range(lo, hi + 1))

    xtr = read_idx(f"{a.data}/train-images-idx3-ubyte.gz")
    ytr = read_idx(f"{a.data}/train-labels-idx1-ubyte.gz").astype(np.int64)
    xte = read_idx(f"{a.data}/t10k-images-idx3-ubyte.gz")
    yte = read_idx(f"{a.data}/t10k-labels-idx1-ubyte.gz").astype(np.int64)
    if a.labels:
        idx = balanced_subset(ytr, a.labels)
        xtr, ytr = xtr[idx], ytr[idx]
    mtr = np.isin(ytr, keep)
    mte = np.isin(yte, keep)
    xtr, ytr, xte, yte = xtr[mtr], ytr[mtr] - lo, xte[mte], yte[mte] - lo

    def prep(x: np.ndarray) -> torch.Tensor:
        return ((torch.from_numpy(x.astype(np.float32) / 255.0) - MEAN) / STD).unsqueeze(1)

    dev = torch.device(a.device)
    Xtr, Ytr, Xte, Yte = prep(xtr).to(dev), torch.from_numpy(ytr).to(dev), prep(xte).to(dev), torch.from_numpy(yte).to(dev)
    model = Teacher(len(keep)).to(dev)
    # Small labelled sets get more passes so that they see a comparable number of steps.
    epochs = a.epochs if not a.labels else max(a.epochs, 60000 * a.epochs // (a.labels * 20))
    steps = epochs * ((len(Xtr) + a.batch - 1) // a.batch)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(a.seed)

    def accuracy(X: torch.Tensor = Xte, Y: torch.Tensor = Yte) -> float:
        model.eval()
        with torch.inference_mode():
            pred = torch.cat([model(X[i : i + 1000]).argmax(1) for i in range(0, len(X), 1000)])
        model.train()
        return float((pred == Y).float().mean())

    for epoch in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(Xtr), generator=gen)
        total = 0.0
        for i in range(0, len(Xtr), a.batch):
            b = perm[i : i + a.batch]
            xb = Xtr[b.to(dev)]
            loss = F.cross_entropy(model(xb if a.no_augment else augment(xb, gen)), Ytr[b.to(dev)], label_smoothing=a.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(b)
        if a.labels == 0 or epoch == epochs - 1 or epoch % 20 == 0:
            print(f"epoch {epoch + 1}/{epochs} loss {total / len(Xtr):.4f} test {accuracy():.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    acc = accuracy()
    train_acc = accuracy(Xtr, Ytr)  # un-augmented: how often its cached logits name the right class
    if a.save_train_logits:
        model.eval()
        with torch.inference_mode():
            z = torch.cat([model(Xtr[i : i + 1000]) for i in range(0, len(Xtr), 1000)]).cpu().numpy().astype(np.float32)
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        z.tofile(f"{a.out}.train-logits.f32")
    model.eval()
    model.cpu()
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    # The TorchScript exporter (PyTorch ≥ 2.9 defaults to the dynamo one, which needs onnxscript).
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(
        model, torch.zeros(1, 1, 28, 28), f"{a.out}.onnx", input_names=["image"], output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=13, **legacy,
    )
    sidecar = {"classes": [CLASSES[c] for c in keep], "normalization": {"mean": [MEAN], "std": [STD]}, "layout": "NCHW"}
    with open(f"{a.out}.json", "w") as f:
        json.dump(sidecar, f, indent=2)
        f.write("\n")
    metrics = {
        "testAccuracy": round(acc, 4), "testImages": int(len(Xte)), "trainAccuracy": round(train_acc, 4), "classes": sidecar["classes"],
        "trainImages": int(len(Xtr)), "epochs": epochs, "seed": a.seed, "params": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__, "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "command": "python3 scripts/teachers/train_teacher.py " + " ".join(
            f"--{k} {v}" for k, v in (("out", a.out), ("classes", a.classes), ("labels", a.labels), ("epochs", a.epochs), ("seed", a.seed), ("label-smoothing", a.label_smoothing))
        ) + (" --no-augment" if a.no_augment else ""),
    }
    with open(f"{a.out}.metrics.json", "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
