// GPU check for a machine with an NVIDIA GPU and no Node toolchain (not run yet: see README "Limits known today").
// It needs only the built dist/ folders and node_modules (no tsx), so that a packed copy fits a 64 MiB transfer:
//   npm run build; bash ../shared/tools/pack-for-gpu-host.sh; then on the GPU host, from the repo root:
//   . .gpu-pack/unpack.sh && node scripts/device/gpu-check.mjs [workdir]
// 1. It loads the shipped teacher in onnxruntime with each execution provider (cpu, the automatic order
//    cuda → webgpu → cpu, webgpu, cuda) and compares logits with cpu.
// 2. ORT engine training throughput: the MLP 784-512-256-10 and the small CNN (conv32-pool-conv64-pool-128-10),
//    batch 128, Adam, on the WebGPU EP, the CUDA EP (where its provider is installed) and the CPU EP, through
//    distillate-train (samples/s per epoch, student.onnx agreement), next to PyTorch on CUDA on the same models
//    (scripts/bench/torch_train.py, when the host's python3 has torch with CUDA).
// 3. TF.js engine: the same MLP and a small CNN with the webgpu and wasm backends.
// The generated test split repeats training rows: accuracy is a smoke check only, the speeds are the point.
/* global console */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { TeacherRegistry } from '@distillate/shared/onnx';
import { writeSyntheticDataset } from '@distillate/shared';

const rows = 256;
const x = new Float32Array(rows * 784);
for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.37) * 1.5;
let ref;
for (const provider of ['cpu', undefined, 'webgpu', 'cuda']) {
  const failures = [];
  const reg = await TeacherRegistry.open('models', {
    ...(provider === undefined ? {} : { provider }),
    onProviderFailure: (_t, p, r) => failures.push(`${p}: ${r.split('\n')[0].slice(0, 200)}`),
  });
  try {
    const t = reg.get('fmnist-teacher');
    const info = await t.info();
    let z = await t.logits(x, rows);
    const t0 = performance.now();
    for (let i = 0; i < 5; i++) z = await t.logits(x, rows);
    const ms = (performance.now() - t0) / 5;
    ref ??= z;
    let d = 0;
    for (let i = 0; i < z.length; i++) d = Math.max(d, Math.abs(z[i] - ref[i]));
    console.log(
      `ORT asked ${provider ?? 'auto'} -> ${info.executionProvider}; batch ${rows}: ${ms.toFixed(2)} ms; max |Δ| vs cpu ${d.toExponential(2)}; failures: ${failures.join(' | ') || 'none'}`,
    );
  } catch (err) {
    console.log(`ORT asked ${provider ?? 'auto'} -> error: ${err.message.split('\n')[0].slice(0, 300)}`);
  } finally {
    await reg.releaseAll();
  }
}

const D = process.argv[2] ?? '/tmp/gc';
mkdirSync(D, { recursive: true });
await writeSyntheticDataset(`${D}/train.arrow`, { rows: 6000, inputShape: [28, 28, 1], classes: 10, seed: 1 });
await writeSyntheticDataset(`${D}/test.arrow`, { rows: 1000, inputShape: [28, 28, 1], classes: 10, seed: 1 });

// 2. The ORT engine on each execution provider.
const big = { mlp: { kind: 'mlp', hidden: [512, 256] }, cnn: { kind: 'cnn', blocks: [{ filters: 32 }, { filters: 64 }], dense: [128] } };
for (const [kind, student] of Object.entries(big)) {
  for (const ep of ['webgpu', 'cuda', 'cpu']) {
    const name = `ort-${kind}-${ep}`;
    const recipe = {
      name,
      data: { train: `${D}/train.arrow`, test: `${D}/test.arrow` },
      student,
      distill: { method: 'scratch' },
      optimizer: { kind: 'adam', lr: 0.001 },
      epochs: 3,
      batchSize: 128,
      seed: 1,
      engine: 'ort',
      executionProvider: ep,
    };
    writeFileSync(`${D}/${name}.json`, JSON.stringify(recipe));
    const t0 = performance.now();
    const r = spawnSync(process.execPath, ['trainer/bin/distillate-train.js', '--recipe', `${D}/${name}.json`, '--out', `${D}/runs`], {
      encoding: 'utf8',
      timeout: 150_000,
    });
    const s = ((performance.now() - t0) / 1000).toFixed(1);
    if (r.status !== 0) {
      console.log(
        `${name}: exit ${r.status} after ${s} s: ${(r.stderr || '')
          .split('\n')
          .filter((l) => l && !l.startsWith('    at'))
          .slice(-2)
          .join(' / ')
          .slice(0, 300)}`,
      );
      continue;
    }
    const run = JSON.parse(readFileSync(`${D}/runs/${name}/run.json`, 'utf8'));
    const sps = run.metrics.map((m) => Math.round(m.samplesPerSecond)).join(', ');
    console.log(
      `${name}: ${s} s; engine ${run.engine.name} on ${run.engine.device}; samples/s per epoch ${sps}; test ${(run.test.accuracy * 100).toFixed(2)} %; student.onnx max |Δ| ${run.onnx?.maxAbsDiff?.toExponential(2)}`,
    );
  }
}
const torch = spawnSync(
  'python3',
  ['scripts/bench/torch_train.py', JSON.stringify({ threads: 16, runs: 5, mlp_batches: 40, cnn_batches: 40, device: 'cuda' })],
  { encoding: 'utf8', timeout: 300_000 },
);
console.log(
  torch.status === 0
    ? `PyTorch CUDA, same models, KD + Adam, batch 128 (samples/s): ${torch.stdout.trim()}`
    : `PyTorch CUDA peer unavailable: ${(torch.stderr || torch.error?.message || '').trim().split('\n').at(-1)}`,
);

// 3. The TF.js engine.
const students = { mlp: [{ kind: 'mlp', hidden: [128] }, 3], cnn: [{ kind: 'cnn', blocks: [{ filters: 16 }, { filters: 32 }], dense: [64] }, 2] };
for (const [kind, [student, epochs]] of Object.entries(students)) {
  for (const backend of ['webgpu', 'wasm']) {
    const name = `${kind}-${backend}`;
    const recipe = {
      name,
      data: { train: `${D}/train.arrow`, test: `${D}/test.arrow` },
      student,
      distill: { method: 'scratch' },
      optimizer: { kind: 'adam', lr: 0.001 },
      schedule: { kind: 'cosine' },
      epochs,
      batchSize: 128,
      seed: 1,
      engine: 'tfjs',
    };
    writeFileSync(`${D}/${name}.json`, JSON.stringify(recipe));
    const t0 = performance.now();
    const r = spawnSync(process.execPath, ['trainer/bin/distillate-train.js', '--recipe', `${D}/${name}.json`, '--backend', backend, '--out', `${D}/runs`], {
      encoding: 'utf8',
      timeout: 150_000,
    });
    const s = ((performance.now() - t0) / 1000).toFixed(1);
    if (r.status !== 0) {
      console.log(
        `${name}: exit ${r.status} after ${s} s: ${(r.stderr || '')
          .split('\n')
          .filter((l) => l && !l.startsWith('    at'))
          .slice(-3)
          .join(' / ')}`,
      );
      continue;
    }
    const run = JSON.parse(readFileSync(`${D}/runs/${name}/run.json`, 'utf8'));
    const sps = run.metrics.map((m) => Math.round(m.samplesPerSecond)).join(', ');
    console.log(
      `${name}: ${s} s; TF.js backend ${run.backend.detail}; samples/s per epoch ${sps}; test ${(run.test.accuracy * 100).toFixed(2)} %; ONNX max |Δ| ${run.onnx?.maxAbsDiff?.toExponential(2)}`,
    );
  }
}
