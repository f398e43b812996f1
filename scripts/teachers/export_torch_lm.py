"""Export a small untrained GPT-style language model with torch.onnx.export: the test fixture
tests/fixtures/torch-lm.onnx, a language-model student the ORT engine must train from the file
alone (`student: { kind: onnx }`).

    python3 scripts/teachers/export_torch_lm.py tests/fixtures/torch-lm.onnx

Written as nanoGPT-style code is (token + position embeddings, pre-norm blocks, a causal mask
buffer applied with masked_fill, GELU MLP, a tied output head), exported by the TorchScript
exporter at opset 17 with a dynamic batch and a fixed block of 64 tokens: int64 input_ids
[B, 64] → float32 logits [B, 64, 1024] (the shipped Brown tokenizer's vocabulary).

Exported as a model meant for training should be (`training=TrainingMode.TRAINING`,
`do_constant_folding=False`): otherwise the exporter stores each Linear weight pre-transposed,
which unties the tied head (it becomes a transposed copy of the embedding), and in eval mode it
also merges initializers with equal values, tying every untrained LayerNorm γ (all ones) into one.
"""
import inspect
import math
import sys

import torch
from torch import nn
from torch.nn import functional as F

VOCAB, BLOCK, D, HEADS, LAYERS = 1024, 64, 64, 2, 2


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(D)
        self.qkv = nn.Linear(D, 3 * D)
        self.proj = nn.Linear(D, D)
        self.ln2 = nn.LayerNorm(D)
        self.fc = nn.Linear(D, 4 * D)
        self.out = nn.Linear(4 * D, D)
        self.register_buffer("mask", torch.tril(torch.ones(BLOCK, BLOCK, dtype=torch.bool)).view(1, 1, BLOCK, BLOCK))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=2)
        q = q.view(B, T, HEADS, C // HEADS).transpose(1, 2)
        k = k.view(B, T, HEADS, C // HEADS).transpose(1, 2)
        v = v.view(B, T, HEADS, C // HEADS).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // HEADS))
        att = att.masked_fill(~self.mask[:, :, :T, :T], float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyGpt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, D)
        self.pos = nn.Embedding(BLOCK, D)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.ln = nn.LayerNorm(D)
        self.head = nn.Linear(D, VOCAB, bias=False)
        self.head.weight = self.tok.weight  # tied

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln(x))


def main(out: str) -> None:
    torch.manual_seed(0)
    model = TinyGpt().train()
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(model, torch.zeros(1, BLOCK, dtype=torch.int64), out, input_names=["input_ids"], output_names=["logits"],
                      dynamic_axes={"input_ids": {0: "N"}, "logits": {0: "N"}}, opset_version=17,
                      training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False, **legacy)
    print(f"{out}: torch {torch.__version__}, {sum(p.numel() for p in model.parameters())} parameters")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/torch-lm.onnx")
