"""Train the shipped language-model teacher on the Brown corpus and export it to ONNX.

    npm run import:brown                      # data/brown/brown-{train,val,test}.jsonl
    python3 scripts/teachers/train_lm.py --out models/brown-lm

Needs PyTorch 2.x (pip), `tokenizers` and `onnx` (pip). Steps:
1. A byte-level BPE tokenizer (vocabulary --vocab, default 1024) trained on the train documents
   only, written as <out>.tokenizer.json (the Hugging Face format the server and trainer read).
2. A decoder-only pre-norm transformer (--layers, --d-model, --heads, --ffn, --context), learned
   positions, tied input/output embedding, GELU (tanh form), trained by AdamW on blocks of --context
   tokens cut from each train document with a stride of context - 1, as Distillate's text import
   cuts them (every token but a document's first is a target once; the last block is padded and
   its padding masked).
3. Exported with torch.onnx.export (TorchScript exporter, opset 17): int64 input_ids [B, L] →
   float32 logits [B, L, V], L ≤ context. The weights are then stored as float16, each followed by
   a Cast to float32, so the file is half the size and every op still runs in float32.
4. <out>.json, the sidecar: a causal LM, its tokenizer file and sha256, context, vocabulary size.
   <out>.metrics.json: test bits per byte and perplexity per token, on the test documents,
   computed from the exported float16 model's logits in PyTorch's float32 (the same blocks).
"""
import argparse
import hashlib
import inspect
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_docs(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def train_tokenizer(texts, vocab, out):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.save(out)
    return tok


def token_bytes(tok):
    """UTF-8 bytes each token id stands for (byte-level BPE: one byte per alphabet character)."""
    from tokenizers import pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    assert len(alphabet) == 256
    V = tok.get_vocab_size()
    out = np.zeros(V, dtype=np.int64)
    for t, i in tok.get_vocab().items():
        out[i] = len(t)  # every character of a byte-level token is one byte
    return out


def blocks(ids_per_doc, L):
    """Blocks of L tokens with stride L - 1 per document; -1 pads the last block of a document."""
    rows = []
    for ids in ids_per_doc:
        n = len(ids)
        if n < 2:
            continue
        start = 0
        while True:
            chunk = ids[start : start + L]
            rows.append(chunk + [-1] * (L - len(chunk)))
            if start + L >= n:
                break
            start += L - 1
    return np.array(rows, dtype=np.int64)


class Block(nn.Module):
    def __init__(self, d, heads, ffn, dropout):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.up = nn.Linear(d, ffn)
        self.down = nn.Linear(ffn, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask):
        B, L, d = x.shape
        h = self.ln1(x)
        q, k, v = self.qkv(h).split(d, dim=-1)
        q = q.reshape(B, L, self.heads, d // self.heads).transpose(1, 2)
        k = k.reshape(B, L, self.heads, d // self.heads).transpose(1, 2)
        v = v.reshape(B, L, self.heads, d // self.heads).transpose(1, 2)
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d // self.heads)) + mask
        att = self.drop(att.softmax(-1))
        y = (att @ v).transpose(1, 2).reshape(B, L, d)
        x = x + self.drop(self.proj(y))
        x = x + self.drop(self.down(F.gelu(self.up(self.ln2(x)), approximate="tanh")))
        return x


class CausalLM(nn.Module):
    def __init__(self, vocab, context, layers, d, heads, ffn, dropout):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(context, d))
        self.blocks = nn.ModuleList([Block(d, heads, ffn, dropout) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.full((context, context), -1e9), diagonal=1), persistent=False)
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.01)

    def forward(self, input_ids):
        L = input_ids.shape[1]
        x = self.drop(self.tok(input_ids) + self.pos[:L])
        mask = self.mask[:L, :L]
        for b in self.blocks:
            x = b(x, mask)
        return self.ln(x) @ self.tok.weight.t()


def nll_sum(logits, rows):
    """Summed next-token negative log-likelihood (nats) and the number of targets, padding masked."""
    targets = rows[:, 1:]
    valid = targets >= 0
    lp = logits[:, :-1].log_softmax(-1)
    picked = lp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(picked * valid).sum(), valid.sum()


def to_float16_weights(path):
    """Store every float32 initializer as float16 followed by a Cast back to float32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(path)
    g = m.graph
    casts = []
    keep = []
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        if init.data_type == TensorProto.FLOAT and arr.size > 16:
            half = numpy_helper.from_array(arr.astype(np.float16), init.name + "_fp16")
            keep.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT, name="cast_" + init.name))
        else:
            keep.append(init)
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts + nodes)
    onnx.checker.check_model(m)
    onnx.save(m, path)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="data/brown")
    p.add_argument("--out", default="models/brown-lm")
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d-model", type=int, default=192)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--ffn", type=int, default=768)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    a = p.parse_args()
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    torch.set_num_threads(a.threads)

    parts = {n: read_docs(os.path.join(a.data, f"brown-{n}.jsonl")) for n in ("train", "val", "test")}
    tok_file = f"{a.out}.tokenizer.json"
    tok = train_tokenizer([d["text"] for d in parts["train"]], a.vocab, tok_file)
    V = tok.get_vocab_size()
    nbytes = token_bytes(tok)
    enc = {n: [tok.encode(d["text"]).ids for d in docs] for n, docs in parts.items()}
    data = {n: torch.from_numpy(blocks(ids, a.context)) for n, ids in enc.items()}
    text_bytes = {n: sum(len(d["text"].encode("utf-8")) for d in docs) for n, docs in parts.items()}
    tokens = {n: sum(len(i) for i in ids) for n, ids in enc.items()}
    print(f"vocab {V}; train {tokens['train']} tokens ({text_bytes['train'] / tokens['train']:.2f} bytes/token), {len(data['train'])} blocks", flush=True)

    model = CausalLM(V, a.context, a.layers, a.d_model, a.heads, a.ffn, a.dropout)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.98), fused=True)
    steps_per_epoch = math.ceil(len(data["train"]) / a.batch)
    total = int(a.epochs * steps_per_epoch)
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))

    def evaluate(rows):
        model.eval()
        nll, n, bytes_ = 0.0, 0, 0
        with torch.no_grad():
            for i in range(0, len(rows), 64):
                r = rows[i : i + 64]
                s, c = nll_sum(model(r.clamp(min=0)), r)
                nll += s.item()
                n += c.item()
                t = r[:, 1:]
                bytes_ += int(nbytes[t[t >= 0].numpy()].sum())
        model.train()
        return nll, n, bytes_

    t0 = time.time()
    step = 0
    while step < total:
        perm = torch.randperm(len(data["train"]))
        for i in range(0, len(perm), a.batch):
            if step >= total:
                break
            r = data["train"][perm[i : i + a.batch]]
            s, c = nll_sum(model(r.clamp(min=0)), r)
            loss = s / c
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0 or step == total:
                print(f"step {step}/{total} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)
        nll, n, b = evaluate(data["val"])
        print(f"val: {nll / n:.4f} nats/token, {nll / math.log(2) / b:.4f} bits/byte ({time.time() - t0:.0f}s)", flush=True)

    model.eval()
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    onnx_path = f"{a.out}.onnx"
    torch.onnx.export(
        model, torch.zeros(1, a.context, dtype=torch.int64), onnx_path, input_names=["input_ids"], output_names=["logits"],
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}, opset_version=17, **legacy,
    )
    to_float16_weights(onnx_path)
    # Evaluate the weights as shipped: float16, computed in float32.
    with torch.no_grad():
        for prm in model.parameters():
            prm.copy_(prm.half().float())
    nll, n, b = evaluate(data["test"])
    with open(tok_file, "rb") as f:
        tok_sha = hashlib.sha256(f.read()).hexdigest()
    sidecar = {
        "kind": "causal-lm", "tokenizer": os.path.basename(tok_file), "tokenizerSha256": tok_sha,
        "context": a.context, "vocabSize": V,
    }
    with open(f"{a.out}.json", "w") as f:
        json.dump(sidecar, f, indent=2)
        f.write("\n")
    metrics = {
        "testBitsPerByte": round(nll / math.log(2) / b, 4), "testPerplexity": round(math.exp(nll / n), 3), "testTokens": n, "testBytes": b,
        "testDocuments": len(parts["test"]), "trainTokens": tokens["train"], "trainDocuments": len(parts["train"]),
        "bytesPerToken": round(text_bytes["train"] / tokens["train"], 3), "vocabSize": V, "context": a.context,
        "layers": a.layers, "dModel": a.d_model, "heads": a.heads, "ffn": a.ffn, "params": params, "epochs": a.epochs, "seed": a.seed,
        "seconds": round(time.time() - t0), "torch": torch.__version__,
        "command": "python3 scripts/teachers/train_lm.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items() if k != "threads"),
    }
    with open(f"{a.out}.metrics.json", "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    print(json.dumps(metrics), flush=True)


if __name__ == "__main__":
    main()
