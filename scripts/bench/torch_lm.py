"""Peer for bench:lm: PyTorch 2.x CPU on the same language models Distillate runs.

    torch_lm.py '<json spec>'    prints one JSON line

spec["mode"] == "forward": the teacher's architecture (scripts/teachers/train_lm.py's CausalLM,
  4 layers, d 192, 6 heads, FFN 768, V 1024, context 128; its weights are random here: the same
  shapes, the same work) under torch.inference_mode, `batch` blocks of 128 tokens per call:
  {"tokens_per_s": median of `runs` timings of `calls` calls}.
spec["mode"] == "train": the student's architecture (2 layers, d 96, 4 heads, FFN 256, no
  dropout) trained with next-token cross-entropy plus KD against soft targets (a dense [B, L, V]
  of sampled-count weights, as the ORT engine's sampled-cache loss), torch.optim.Adam(fused=True):
  {"tokens_per_s": ...} over `steps` steps after a warm-up.
"""
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "teachers"))
from train_lm import CausalLM  # noqa: E402

spec = json.loads(sys.argv[1])
torch.set_num_threads(spec.get("threads", os.cpu_count()))
torch.manual_seed(0)
L, V, B = 128, 1024, spec.get("batch", 32)
rates = []
if spec["mode"] == "forward":
    model = CausalLM(V, L, 4, 192, 6, 768, 0.0).eval()
    x = torch.randint(0, V, (B, L))
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        for _ in range(spec.get("runs", 3)):
            t0 = time.perf_counter()
            for _ in range(spec.get("calls", 8)):
                model(x)
            rates.append(spec.get("calls", 8) * B * L / (time.perf_counter() - t0))
else:
    model = CausalLM(V, L, 2, 96, 4, 256, 0.0)
    opt = torch.optim.Adam(model.parameters(), 3e-3, fused=True)
    x = torch.randint(0, V, (B, L))
    target = torch.randint(0, V, (B, L))
    soft = torch.zeros(B, L, V)
    idx = torch.randint(0, V, (B, L, 6))
    soft.scatter_(-1, idx, 1.0 / 6)

    def step():
        z = model(x)
        logq = z.log_softmax(-1)
        ce = F.nll_loss(logq.reshape(-1, V), target.reshape(-1))
        kd = -(soft * logq).sum(-1).mean()
        loss = ce + kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    for _ in range(spec.get("runs", 3)):
        t0 = time.perf_counter()
        for _ in range(spec.get("steps", 10)):
            step()
        rates.append(spec.get("steps", 10) * B * L / (time.perf_counter() - t0))
print(json.dumps({"tokens_per_s": statistics.median(rates), "torch": torch.__version__}))
