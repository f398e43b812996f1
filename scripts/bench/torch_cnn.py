"""Peer for bench:server: the same CNN and weights in PyTorch eager (CPU), inference only.

Reads weights (float32 little-endian, in the order given on the command line) from a binary
file, runs the same batches as the Node benchmark, and prints samples/s as JSON.
"""
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def main() -> None:
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec["threads"])
    raw = np.fromfile(spec["weights"], dtype="<f4")
    off = 0
    w = {}
    for name, dims in spec["layout"]:
        n = int(np.prod(dims))
        w[name] = torch.from_numpy(raw[off : off + n].reshape(dims).copy())
        off += n
    x = torch.from_numpy(np.fromfile(spec["inputs"], dtype="<f4").reshape(-1, 1, 28, 28).copy())
    batch = spec["batch"]

    def run() -> None:
        with torch.inference_mode():
            for i in range(0, x.shape[0], batch):
                h = F.max_pool2d(F.relu(F.conv2d(x[i : i + batch], w["c1w"], w["c1b"], padding=1)), 2)
                h = F.max_pool2d(F.relu(F.conv2d(h, w["c2w"], w["c2b"], padding=1)), 2)
                h = F.relu(h.flatten(1) @ w["f1w"] + w["f1b"])
                _ = h @ w["f2w"] + w["f2b"]

    run()  # warm-up
    rates = []
    for _ in range(spec["runs"]):
        t0 = time.perf_counter()
        run()
        rates.append(x.shape[0] / (time.perf_counter() - t0))
    rates.sort()
    print(json.dumps({"samples_per_s": rates[len(rates) // 2], "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
