"""Where can the MLP student gain from a teacher? The GPU sweeps behind BENCHMARKS.md's "Looking for
the KD target" section: teachers (full data, out-of-fold, extra seeds for an ensemble) and
vectorised students (many MLPs trained at once with batched matmuls, one optimizer).

    kd_sweep.py teacher NAME FOLD K   train a teacher CNN (train_teacher.py's network) on the rows not in
                                      fold FOLD of K (K = 1: every row; seed 100 + FOLD), bf16 on CUDA; writes
                                      NAME.pt / .onnx / .train.f32 (logits over every training image) /
                                      .held.npy / .json (accuracies) into $WORK
    kd_sweep.py views                 sweep 1: 784-128-10 students at 10/20/40 epochs from clean images (scratch,
                                      KD from the full teacher or out-of-fold teachers), from 4 or 16 stored
                                      augmented views per image (logits precomputed, as a cache would hold
                                      them), from fresh augmentations with the teacher online, and from
                                      online mixup; needs full (and oof2-*, oof5-*) in $WORK
    kd_sweep.py temperature E40       sweep 2: T in {0.5, 1, 1.5, 2}, ce 0 / 0.3, label-smoothed scratch, for
                                      teachers E40 (a logits file), full, and the mean of full + ens1..4

`kd_sweep.sh` runs both as they were run (an NVIDIA H200: about 5 and 3.5 minutes). Scores are on
the test split (there is no validation split): the best of many settings is biased upwards.
Environment: DATA (the IDX files; default /usr/share/datasets/fashion-mnist), WORK (default /tmp/kd-sweep),
SMOKE=1 (3,000 rows, tiny students: checks the script on a CPU).
"""
import contextlib, gzip, inspect, json, math, os, sys, time
import numpy as np, torch, torch.nn.functional as F
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_teacher import Teacher, MEAN, STD  # noqa: E402

SMOKE = os.environ.get('SMOKE') == '1'
dev = 'cuda' if torch.cuda.is_available() else 'cpu'
D = os.environ.get('DATA', '/usr/share/datasets/fashion-mnist') + '/'
W = os.environ.get('WORK', '/tmp/kd-sweep')
os.makedirs(W, exist_ok=True)
def idx(f, off): return np.frombuffer(gzip.open(D + f).read(), np.uint8, offset=off)
xtr8 = torch.tensor(idx('train-images-idx3-ubyte.gz', 16).reshape(-1, 28, 28).copy())
ytr = torch.tensor(idx('train-labels-idx1-ubyte.gz', 8).astype(np.int64))
xte8 = torch.tensor(idx('t10k-images-idx3-ubyte.gz', 16).reshape(-1, 28, 28).copy())
yte = torch.tensor(idx('t10k-labels-idx1-ubyte.gz', 8).astype(np.int64))
N = 60000 if not SMOKE else 3000
xtr8, ytr = xtr8[:N], ytr[:N]


def amp():
    return torch.autocast('cuda', torch.bfloat16) if dev == 'cuda' else contextlib.nullcontext()


def shift_flip(x, gen, flip=True, s=2):
    """x: [n, 28, 28] float; a random per-sample shift of up to s pixels (zero padding) and a random flip (one grid_sample)."""
    n = x.shape[0]
    f = (torch.rand(n, generator=gen) < 0.5).float() if flip else torch.zeros(n)
    d = torch.randint(-s, s + 1, (n, 2), generator=gen).float() * 2 / 28
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1 - 2 * f
    theta[:, 1, 1] = 1
    theta[:, :, 2] = d
    grid = F.affine_grid(theta.to(x.device), (n, 1, 28, 28), align_corners=False)
    return F.grid_sample(x.unsqueeze(1), grid, mode='nearest', padding_mode='zeros', align_corners=False).squeeze(1)


def tnorm(x01):  # [n,28,28] in [0,1] -> teacher input
    return ((x01 - MEAN) / STD).unsqueeze(1)


def teacher_logits(model, x01):
    model.eval()
    with torch.inference_mode(), amp():
        return torch.cat([model(tnorm(x01[i:i + 4096])).float() for i in range(0, len(x01), 4096)])


def train_teacher(name, fold, k, epochs=20):
    torch.manual_seed(100 + fold)
    rows = torch.arange(N)
    held = (rows % k == fold) if k > 1 else torch.zeros(N, dtype=torch.bool)
    X = (xtr8[~held].float() / 255).to(dev); Y = ytr[~held].to(dev)
    model = Teacher(10).to(dev).to(memory_format=torch.channels_last)
    ep = epochs if not SMOKE else 1
    steps = ep * math.ceil(len(X) / 128)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(fold)
    t0 = time.time()
    for e in range(ep):
        model.train()
        perm = torch.randperm(len(X), generator=gen).to(dev)
        for i in range(0, len(X), 128):
            b = perm[i:i + 128]
            with amp():
                loss = F.cross_entropy(model(tnorm(shift_flip(X[b], gen))), Y[b])
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); sched.step()
    te = teacher_logits(model, (xte8.float() / 255).to(dev))
    tr = teacher_logits(model, (xtr8.float() / 255).to(dev))
    acc = (te.argmax(1).cpu() == yte).float().mean().item()
    tracc = (tr.argmax(1).cpu() == ytr).float().mean().item()
    held_acc = (tr[held.to(dev)].argmax(1).cpu() == ytr[held]).float().mean().item() if k > 1 else float('nan')
    torch.save(model.state_dict(), f'{W}/{name}.pt')
    tr.cpu().numpy().astype(np.float32).tofile(f'{W}/{name}.train.f32')
    np.save(f'{W}/{name}.held.npy', held.numpy())
    model.eval().float().cpu()
    legacy = {'dynamo': False} if 'dynamo' in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(model.to(memory_format=torch.contiguous_format), torch.zeros(1, 1, 28, 28), f'{W}/{name}.onnx', input_names=['image'], output_names=['logits'],
                      dynamic_axes={'image': {0: 'batch'}, 'logits': {0: 'batch'}}, opset_version=13, **legacy)
    r = dict(name=name, fold=fold, k=k, test=acc, train=tracc, held=held_acc, secs=time.time() - t0)
    print(json.dumps(r), flush=True)
    json.dump(r, open(f'{W}/{name}.json', 'w'))


def oof(k):
    z = np.zeros((N, 10), np.float32)
    for f in range(k):
        held = np.load(f'{W}/oof{k}-{f}.held.npy')
        z[held] = np.fromfile(f'{W}/oof{k}-{f}.train.f32', np.float32).reshape(N, 10)[held]
    return torch.tensor(z)


def mlp_bank(M, hidden, epochs, lr):
    """M students 784-hidden-10 trained at once (batched matmuls, PyTorch's Linear initialisation, seeded by
    hidden and epochs), with Adam and a cosine schedule over every step: (forward [M, B, 784] -> [M, B, 10], opt, sched)."""
    g = torch.Generator().manual_seed(hidden * 1000 + epochs)
    def init(fi, fo):
        b = 1 / math.sqrt(fi)
        return ((torch.rand(M, fi, fo, generator=g) * 2 - 1) * b).to(dev).requires_grad_(), ((torch.rand(M, 1, fo, generator=g) * 2 - 1) * b).to(dev).requires_grad_()
    W1, b1 = init(784, hidden); W2, b2 = init(hidden, 10)
    opt = torch.optim.Adam([W1, b1, W2, b2], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * math.ceil(N / 128))
    return (lambda X: torch.baddbmm(b2, F.relu(torch.baddbmm(b1, X, W1)), W2)), opt, sched


def views_sweep():
    full = Teacher(10).to(dev); full.load_state_dict(torch.load(f'{W}/full.pt')); full.eval()
    sources = {'full': torch.tensor(np.fromfile(f'{W}/full.train.f32', np.float32).reshape(N, 10))}
    for k in (2, 5):
        if os.path.exists(f'{W}/oof{k}-0.held.npy'):
            sources[f'oof{k}'] = oof(k)
    for s, z in sources.items():
        print(f'source {s}: argmax==label on {(z.argmax(1) == ytr).float().mean() * 100:.2f} % of train rows', flush=True)
    KV = 16 if not SMOKE else 2
    gen = torch.Generator().manual_seed(7)
    X01 = (xtr8.float() / 255).to(dev)
    views = torch.stack([(shift_flip(X01, gen) * 255).round().to(torch.uint8) for _ in range(KV)])  # [KV, N, 28, 28]
    vlog = torch.stack([teacher_logits(full, views[v].float() / 255) for v in range(KV)])  # [KV, N, 10]
    Xte = (xte8.float() / 255).reshape(-1, 784).to(dev); Yte = yte.to(dev); Y = ytr.to(dev)
    src_names = list(sources)
    SL = torch.stack([sources[s] for s in src_names]).to(dev)  # [S, N, 10]
    # kinds: 0 clean, 1 static views (first kv views), 2 online shift+flip, 3 online mixup of shifted views
    results = []
    for hidden, epochs in ([(128, 10), (128, 20), (128, 40)] if not SMOKE else [(16, 1)]):
        cfg = [dict(kind=0, src=None, T=1, ce=1, kd=0, seed=s) for s in range(3)]
        cfg += [dict(kind=1, kv=kv, src=None, T=1, ce=1, kd=0, seed=s) for kv in (4, 16) for s in range(2)]
        cfg += [dict(kind=2, src=None, T=1, ce=1, kd=0, seed=s) for s in range(2)]
        cfg += [dict(kind=0, src=s, T=T, ce=c, kd=1 - c if c < 1 else 1, seed=sd) for s in src_names for T in (1, 2, 4) for c in (0, 0.5) for sd in range(2)]
        cfg += [dict(kind=1, kv=kv, src='views', T=T, ce=c, kd=1 - c, seed=sd) for kv in (4, 16) for T in (1, 2, 4) for c in (0, 0.5) for sd in range(2)]
        cfg += [dict(kind=2, src='online', T=T, ce=c, kd=1 - c, seed=sd) for T in (1, 2, 4) for c in (0, 0.5) for sd in range(2)]
        cfg += [dict(kind=3, src='online', T=T, ce=0, kd=1, seed=sd) for T in (1, 2, 4) for sd in range(2)]
        M = len(cfg)
        fwd, opt, sched = mlp_bank(M, hidden, epochs, 1e-3)
        kind = torch.tensor([c['kind'] for c in cfg], device=dev)
        kvv = torch.tensor([min(c.get('kv', 1), KV) for c in cfg], device=dev)
        # target index into [S sources..., views, online]
        S = len(src_names)
        def target_index(c):
            if c['src'] in src_names: return src_names.index(c['src'])
            if c['src'] == 'online': return S if c['kind'] == 2 else S + 1
            return 0  # views (replaced below) or scratch (kd weight 0)
        tix = torch.tensor([target_index(c) for c in cfg], device=dev)
        use_views = torch.tensor([c['src'] == 'views' for c in cfg], device=dev)
        Tv = torch.tensor([c['T'] for c in cfg], dtype=torch.float32, device=dev)[:, None, None]
        ce_w = torch.tensor([c['ce'] for c in cfg], dtype=torch.float32, device=dev)
        kd_w = torch.tensor([c['kd'] if c['src'] is not None else 0 for c in cfg], dtype=torch.float32, device=dev)
        t0 = time.time()
        for ep in range(epochs):
            perm = torch.randperm(N, generator=gen).to(dev)
            for i in range(0, N, 128):
                b = perm[i:i + 128]; B = len(b)
                xc = X01[b]
                vi = (torch.rand(B, generator=gen).to(dev)[None, :] * kvv[:, None]).long()  # [M, B] view per model
                xv = views[vi, b[None, :]].float() / 255  # [M, B, 28, 28]
                tv = vlog[vi, b[None, :]]  # [M, B, 10]
                xo = shift_flip(xc, gen)
                lam = torch.distributions.Beta(1.0, 1.0).sample((B,)).to(dev)
                j = torch.randperm(B, generator=gen).to(dev)
                xo2 = shift_flip(xc, gen)
                xm = lam[:, None, None] * xo2 + (1 - lam[:, None, None]) * xo2[j]
                to = teacher_logits(full, torch.cat([xo, xm]))
                X = torch.where((kind == 0)[:, None, None, None], xc[None], xv)
                X = torch.where((kind == 2)[:, None, None, None], xo[None], X)
                X = torch.where((kind == 3)[:, None, None, None], xm[None], X).reshape(M, B, 784)
                Tall = torch.cat([SL[:, b], to[None, :B], to[None, B:]])  # [S+2, B, 10]: sources, online views, online mixup
                t = torch.where(use_views[:, None, None], tv, Tall[tix])
                s = fwd(X)
                ce = F.cross_entropy(s.reshape(-1, 10), Y[b].repeat(M), reduction='none').view(M, -1).mean(1)
                kl = (F.softmax(t / Tv, -1) * (F.log_softmax(t / Tv, -1) - F.log_softmax(s / Tv, -1))).sum(-1).mean(1) * Tv[:, 0, 0] ** 2
                loss = (ce_w * ce + kd_w * kl).sum()
                opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); sched.step()
        with torch.no_grad():
            acc = (fwd(Xte.expand(M, -1, -1)).argmax(-1) == Yte).float().mean(1).cpu().numpy() * 100
        for c, a in zip(cfg, acc):
            results.append(dict(c, hidden=hidden, epochs=epochs, acc=float(a)))
        groups = {}
        for c, a in zip(cfg, acc):
            key = json.dumps({k: v for k, v in c.items() if k != 'seed'})
            groups.setdefault(key, []).append(float(a))
        print(f'== hidden {hidden} epochs {epochs} ({time.time() - t0:.0f} s, {M} students)', flush=True)
        for key, accs in sorted(groups.items(), key=lambda kv: -np.mean(kv[1])):
            print(f'  {np.mean(accs):.2f} ±{np.std(accs):.2f}  {key}', flush=True)
        json.dump(results, open(f'{W}/sweep.json', 'w'))


def temperature_sweep(e40_logits):
    srcs = {'e40': np.fromfile(e40_logits, np.float32), 'full': np.fromfile(f'{W}/full.train.f32', np.float32)}
    srcs = {k: torch.tensor(v.reshape(-1, 10)[:N]) for k, v in srcs.items()}
    ens = [srcs['full']] + [torch.tensor(np.fromfile(f'{W}/ens{i}.train.f32', np.float32).reshape(N, 10)) for i in range(1, 5) if os.path.exists(f'{W}/ens{i}.train.f32')]
    srcs['ens'] = torch.stack(ens).mean(0)
    print('ensemble of', len(ens))
    for s, z in srcs.items():
        print(f'source {s}: argmax==label on {(z.argmax(1) == ytr).float().mean() * 100:.2f} % of train rows', flush=True)
    names = list(srcs)
    SL = torch.stack([srcs[s] for s in names]).to(dev)
    X01 = (xtr8.float() / 255).reshape(N, 784).to(dev); Y = ytr.to(dev)
    Xte = (xte8.float() / 255).reshape(-1, 784).to(dev); Yte = yte.to(dev)
    gen = torch.Generator().manual_seed(3)
    results = []
    groups = [(128, 20, 1e-3), (128, 20, 2e-3), (128, 30, 1e-3), (256, 20, 1e-3), (128, 30, 2e-3)] if not SMOKE else [(16, 1, 1e-3)]
    for hidden, epochs, lr in groups:
        cfg = [dict(src=None, ls=ls, T=1, ce=1, seed=s) for ls in (0, 0.1) for s in range(2)]
        cfg += [dict(src=s, ls=0, T=T, ce=c, seed=sd) for s in names for T in (0.5, 1, 1.5, 2) for c in (0, 0.3) for sd in range(2)]
        M = len(cfg)
        fwd, opt, sched = mlp_bank(M, hidden, epochs, lr)
        tix = torch.tensor([names.index(c['src']) if c['src'] else 0 for c in cfg], device=dev)
        Tv = torch.tensor([c['T'] for c in cfg], dtype=torch.float32, device=dev)[:, None, None]
        ce_w = torch.tensor([c['ce'] for c in cfg], dtype=torch.float32, device=dev)
        kd_w = torch.tensor([0 if c['src'] is None else 1 - c['ce'] for c in cfg], dtype=torch.float32, device=dev)
        ls_w = torch.tensor([c['ls'] for c in cfg], dtype=torch.float32, device=dev)
        t0 = time.time()
        for ep in range(epochs):
            perm = torch.randperm(N, generator=gen).to(dev)
            for i in range(0, N, 128):
                b = perm[i:i + 128]
                s = fwd(X01[b].expand(M, -1, -1))
                logp = F.log_softmax(s, -1)
                nll = -logp.gather(-1, Y[b][None, :, None].expand(M, -1, 1)).squeeze(-1).mean(1)
                ce = (1 - ls_w) * nll + ls_w * (-logp.mean(-1)).mean(1)
                t = SL[tix][:, b]
                kl = (F.softmax(t / Tv, -1) * (F.log_softmax(t / Tv, -1) - F.log_softmax(s / Tv, -1))).sum(-1).mean(1) * Tv[:, 0, 0] ** 2
                loss = (ce_w * ce + kd_w * kl).sum()
                opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); sched.step()
        with torch.no_grad():
            acc = (fwd(Xte.expand(M, -1, -1)).argmax(-1) == Yte).float().mean(1).cpu().numpy() * 100
        gr = {}
        for c, a in zip(cfg, acc):
            results.append(dict(c, hidden=hidden, epochs=epochs, lr=lr, acc=float(a)))
            gr.setdefault(json.dumps({k: v for k, v in c.items() if k != 'seed'}), []).append(float(a))
        sc = np.mean(acc[:2])
        print(f'== hidden {hidden} epochs {epochs} lr {lr} ({time.time() - t0:.0f} s, {M} students); scratch {sc:.2f}', flush=True)
        for key, accs in sorted(gr.items(), key=lambda kv: -np.mean(kv[1]))[:14]:
            print(f'  {np.mean(accs):.2f} ±{np.std(accs):.2f} ({np.mean(accs) - sc:+.2f})  {key}', flush=True)
        json.dump(results, open(f'{W}/kd2.json', 'w'))


if __name__ == '__main__':
    if sys.argv[1] == 'teacher':
        train_teacher(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == 'views':
        views_sweep()
    elif sys.argv[1] == 'temperature':
        temperature_sweep(sys.argv[2])
    else:
        raise SystemExit(f'unknown command {sys.argv[1]}: teacher | views | temperature')
