/**
 * npm run bench:ort [-- --json] [-- --quick]
 *
 * The ORT engine's formulation choices, each measured against the alternative it replaced, in
 * one run on the CPU EP (ms per call, median of 7 after a warm-up):
 *  - MaxPool on [128, 32, 28, 28], forward and gradient: the gradient by SpaceToDepth/compare/
 *    DepthToSpace (used; the WebGPU EP has no Indices output) against upsampling with Expand,
 *    and against MaxPool's Indices output with MaxUnpool (CPU only);
 *  - Conv's dW (conv2 of the small CNN): patches by a one-hot grouped convolution and a batched
 *    MatMul (used on the CPU EP) against a convolution with the batch as the channel axis (used
 *    on WebGPU, whose grouped convolutions are wrong);
 *  - ReLU's gradient: Where(y > 0, dy, 0) (used) against Sign(y)·dy;
 *  - train steps per session run (the Loop of stepsPerRun): 32 against 8 and 1, for the MLP
 *    784-512-256-10 and the small CNN, batch 128, KD + CE, Adam;
 *  - intra-op threads: every core (what OrtSession asks for) against ORT's own default (0);
 *  - the data path of one epoch (60,000 rows of 28×28 uint8 images, Fashion-MNIST's size, with
 *    a dense cache, batch 128): stored bytes for an engine that scales them in its graph (used
 *    on the ORT engine) against scaled float rows, and a pass over the dataset read into one
 *    reused buffer (used) against a fresh buffer per record batch, and batches refilled from a
 *    pool (used) against fresh ones;
 *  - a 6.4 MB output fetched into a preallocated array against a fresh one (rejected: no gain);
 *  - Adam's update writing its output from its last op (used) against an Identity after it;
 *  - a 1×1 convolution's input gradient as Wᵀ·dY (used) against ConvTranspose;
 *  - one node at a time (used) against inter-op parallelism, and spinning threads (ORT's default,
 *    used) against parked ones, for both train steps.
 * Each op graph reduces its result to a scalar, so the figures are the ops' cost, not the cost
 * of copying a large output back to JavaScript.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatasetReader, LogitCacheReader, runCli } from '@distillate/shared';
import { defaultIntraOpThreads, Graph, OrtSession } from '@distillate/shared/onnx';
import { batchLoss, BatchPool, epochBatches, OrtEngine, parseRecipe, selectBackend, type BatchLayout, type TeacherPlan } from '@distillate/trainer';
import { log, median, printRows, row, type BenchRow, benchProgram } from './bench/report.js';
import { makeData } from './bench/synthetic-data.js';

async function timeGraph(g: Graph, feeds: Record<string, { data: Float32Array; dims: number[] }>, out: string, runs: number): Promise<number> {
  const session = await OrtSession.create(g.toBytes(), { provider: 'cpu' });
  try {
    await session.runMany(feeds, [out]);
    const t: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      await session.runMany(feeds, [out]);
      t.push(performance.now() - t0);
    }
    return median(t);
  } finally {
    await session.release();
  }
}

function poolGradient(kind: 'space-to-depth' | 'expand' | 'indices', [N, C, H, W]: number[]): Graph {
  const [h, w] = [H! / 2, W! / 2];
  const g = new Graph('pool');
  g.input('x', [N!, C!, H!, W!]);
  g.input('dy', [N!, C!, h, w]);
  const i64 = (v: number[]) => g.int64('s', v);
  const zero = g.constant('z', [0], []);
  let dx: string;
  if (kind !== 'indices') g.node('MaxPool', ['x'], { kernel_shape: [2, 2], strides: [2, 2] }, 'y');
  if (kind === 'space-to-depth') {
    const xs = g.node('Reshape', [g.node('SpaceToDepth', ['x'], { blocksize: 2 }), i64([-1, 4, C!, h, w])]);
    const spread = (t: string) => g.node('Reshape', [t, i64([-1, 1, C!, h, w])]);
    const picked = g.node('Where', [g.node('Equal', [xs, spread('y')]), spread('dy'), zero]);
    dx = g.node('DepthToSpace', [g.node('Reshape', [picked, i64([-1, 4 * C!, h, w])])], { blocksize: 2, mode: 'DCR' });
  } else if (kind === 'expand') {
    const up = (t: string) =>
      g.node('Reshape', [g.node('Expand', [g.node('Reshape', [t, i64([-1, C!, h, 1, w, 1])]), i64([1, 1, 1, 2, 1, 2])]), i64([-1, C!, H!, W!])]);
    dx = g.node('Where', [g.node('Equal', ['x', up('y')]), up('dy'), zero]);
  } else {
    const [, indices] = g.add('MaxPool', ['x'], { kernel_shape: [2, 2], strides: [2, 2] }, 2);
    dx = g.node('MaxUnpool', ['dy', indices!, i64([N!, C!, H!, W!])], { kernel_shape: [2, 2], strides: [2, 2] });
  }
  g.output(g.node('ReduceSum', [dx], { keepdims: 0 }, 'out'), []);
  return g;
}

/** dW of a 3×3 convolution (pad 1) of X [N, C, H, W] into M channels, by the engine's two formulations. */
function convWeightGradient(kind: 'patches' | 'batch-as-channel', [N, C, H, W, M]: number[]): Graph {
  const g = new Graph('dw');
  g.input('x', [N!, C!, H!, W!]);
  g.input('dy', [N!, M!, H!, W!]);
  const i64 = (v: number[]) => g.int64('s', v);
  let dw: string;
  if (kind === 'batch-as-channel') {
    const xT = g.node('Transpose', ['x'], { perm: [1, 0, 2, 3] });
    const dyT = g.node('Transpose', ['dy'], { perm: [1, 0, 2, 3] });
    dw = g.node('Transpose', [g.node('Conv', [xT, dyT], { pads: [1, 1, 1, 1] })], { perm: [1, 0, 2, 3] });
  } else {
    const oneHot = new Float32Array(C! * 81);
    for (let c = 0; c < C!; c++) for (let k = 0; k < 9; k++) oneHot[(c * 9 + k) * 9 + k] = 1;
    const patches = g.node('Conv', ['x', g.constant('one_hot', oneHot, [C! * 9, 1, 3, 3])], { group: C!, pads: [1, 1, 1, 1], kernel_shape: [3, 3] });
    const P = g.node('Transpose', [g.node('Reshape', [patches, i64([-1, C! * 9, H! * W!])])], { perm: [0, 2, 1] });
    dw = g.node('ReduceSum', [g.node('MatMul', [g.node('Reshape', ['dy', i64([-1, M!, H! * W!])]), P]), i64([0])], { keepdims: 0 });
  }
  g.output(g.node('ReduceSum', [dw], { keepdims: 0 }, 'out'), []);
  return g;
}

/** Adam's parameter update over `n` values, ending in the output itself (used) or through an Identity (the form before). */
function adamUpdate(kind: 'direct' | 'identity', n: number): Graph {
  const g = new Graph('adam');
  for (const v of ['p', 'm', 'v', 'grad']) g.input(v, [n]);
  const c = (x: number) => g.constant('c', [x], []);
  const m = g.node('Add', [g.node('Mul', ['m', c(0.9)]), 'grad']);
  const v = g.node('Add', [g.node('Mul', ['v', c(0.999)]), g.node('Mul', ['grad', 'grad'])]);
  const step = g.node('Mul', [g.node('Div', [m, g.node('Add', [g.node('Sqrt', [v]), c(1e-7)])]), c(1e-3)]);
  const next = g.node('Sub', ['p', step], {}, kind === 'direct' ? 'next' : undefined);
  if (kind === 'identity') g.node('Identity', [next], {}, 'next');
  g.output('next', [n]);
  return g;
}

/** A 1×1 convolution's input gradient: a transposed convolution against Wᵀ·dY as a matrix product (used). */
function pointwiseInputGradient(kind: 'conv-transpose' | 'matmul', [N, C, H, W, F]: number[]): Graph {
  const g = new Graph('pointwise', 17);
  g.input('dy', [N!, F!, H!, W!]);
  const w = g.constant(
    'w',
    Array.from({ length: F! * C! }, (_, i) => Math.sin(i)),
    [F!, C!, 1, 1],
  );
  const dx =
    kind === 'conv-transpose'
      ? g.node('ConvTranspose', ['dy', w], { kernel_shape: [1, 1] })
      : g.node('Reshape', [
          g.node('MatMul', [g.node('Transpose', [g.node('Reshape', [w, g.int64('s', [F!, C!])])]), g.node('Reshape', ['dy', g.int64('s', [N!, F!, H! * W!])])]),
          g.int64('s', [N!, C!, H!, W!]),
        ]);
  g.output(g.node('ReduceSum', [dx], { keepdims: 0 }, 'out'), []);
  return g;
}

function reluGradient(kind: 'where' | 'sign', n: number): Graph {
  const g = new Graph('relu');
  g.input('y', [n]);
  g.input('dy', [n]);
  const dx =
    kind === 'where'
      ? g.node('Where', [g.node('Greater', ['y', g.constant('z', [0], [])]), 'dy', g.constant('z', [0], [])])
      : g.node('Mul', [g.node('Sign', ['y']), 'dy']);
  g.output(g.node('ReduceSum', [dx], { keepdims: 0 }, 'out'), []);
  return g;
}

async function stepsPerRun(
  student: object,
  K: number,
  steps: number,
  threads?: number,
  session?: { interOpThreads?: number; spinning?: boolean },
): Promise<number> {
  const recipe = parseRecipe({ name: 'b', data: { train: 'unused' }, student, stepsPerRun: K });
  const [B, C, D] = [128, 10, 784];
  const plan: TeacherPlan = {
    caches: [],
    layout: { inputSize: D, slots: [{ kind: 'dense', classes: C }] },
    mode: 'single',
    classes: Array.from({ length: C }, (_, i) => `c${i}`),
    classIndex: [],
    union: 'subsets',
  };
  const batches = Array.from({ length: K }, (_, k) => {
    const b = {
      rows: B,
      x: Float32Array.from({ length: B * D }, (_, i) => ((i * 7 + k) % 13) / 13),
      labels: Int32Array.from({ length: B }, (_, i) => i % C),
      hasTeacher: new Uint8Array(B).fill(1),
      slots: [{ logits: Float32Array.from({ length: B * C }, (_, i) => Math.sin(i + k) * 4) }],
    };
    return {
      batch: { rows: B, inputs: { input: { data: b.x, dims: [B, b.x.length / B] } } },
      loss: batchLoss(b, { plan, distill: { method: 'kd', params: { temperature: 4 } }, ceWeight: 1, kdWeight: 1, temperature: 4 }),
    };
  });
  const engine = await OrtEngine.create(recipe, [28, 28, 1], C, {
    provider: 'cpu',
    ...(threads === undefined ? {} : { intraOpThreads: threads }),
    ...(session === undefined ? {} : { session }),
  });
  try {
    await engine.steps(batches, 1e-3);
    const t: number[] = [];
    for (let i = 0; i < Math.max(1, Math.round(steps / K)); i++) {
      const t0 = performance.now();
      await engine.steps(batches, 1e-3);
      t.push((performance.now() - t0) / K);
    }
    return median(t);
  } finally {
    await engine.release();
  }
}

/** ms per run of a one-op graph whose output is `n` floats, fetched fresh or into a preallocated array. */
async function timeOutput(g: Graph, n: number, runs: number, preallocated: boolean): Promise<number> {
  const session = await OrtSession.create(g.toBytes(), { provider: 'cpu' });
  try {
    const feeds = { x: { data: new Float32Array(n), dims: [n] } };
    const into = preallocated ? { y: { data: new Float32Array(n), dims: [n] } } : undefined;
    const t: number[] = [];
    for (let i = 0; i < 4 * runs; i++) {
      const t0 = performance.now();
      await session.runMany(feeds, ['y'], into);
      t.push(performance.now() - t0);
    }
    return median(t);
  } finally {
    await session.release();
  }
}

/**
 * The data path's choices, in turns (`runs` each, medians in ms): one epoch of batches with
 * stored bytes against scaled floats, and one pass over the dataset's record batches read into
 * a reused buffer against fresh ones.
 */
async function dataPath(rows: number, runs: number): Promise<{ stored: number; scaled: number; reused: number; fresh: number; pooled: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-ort-data-'));
  try {
    const made = await makeData(dir, rows);
    const dataset = await DatasetReader.open(made.data);
    const cache = await LogitCacheReader.open(made.cache);
    const epoch = async (layout: BatchLayout, seed: number): Promise<number> => {
      const t0 = performance.now();
      for await (const b of epochBatches([{ dataset, caches: [cache], rows }], layout, { batchSize: 128, shuffleBuffer: 2048, seed, shuffle: true })) void b;
      return performance.now() - t0;
    };
    const pass = async (reuse: boolean): Promise<number> => {
      const t0 = performance.now();
      for await (const b of dataset.batches({ reuse })) void b;
      return performance.now() - t0;
    };
    const pooled = async (layout: BatchLayout, seed: number): Promise<number> => {
      const pool = new BatchPool();
      const t0 = performance.now();
      for await (const b of epochBatches([{ dataset, caches: [cache], rows }], layout, { batchSize: 128, shuffleBuffer: 2048, seed, shuffle: true, pool }))
        pool.release(b); // as train() hands a batch back once its group has trained
      return performance.now() - t0;
    };
    const slots = [{ kind: 'dense', classes: 10 }] as const;
    const t = { stored: [] as number[], scaled: [] as number[], reused: [] as number[], fresh: [] as number[], pooled: [] as number[] };
    for (let i = 0; i < runs + 1; i++) {
      const stored = await epoch({ inputSize: 784, slots, storedInputs: true }, i);
      const scaled = await epoch({ inputSize: 784, slots }, i);
      const reused = await pass(true);
      const fresh = await pass(false);
      const withPool = await pooled({ inputSize: 784, slots }, i);
      if (i === 0) continue; // the first turn warms up
      t.stored.push(stored);
      t.scaled.push(scaled);
      t.reused.push(reused);
      t.fresh.push(fresh);
      t.pooled.push(withPool);
    }
    return { stored: median(t.stored), scaled: median(t.scaled), reused: median(t.reused), fresh: median(t.fresh), pooled: median(t.pooled) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function main(opts: { json: boolean; quick: boolean }): Promise<void> {
  await selectBackend('cpu');
  const rows: BenchRow[] = [];
  const runs = opts.quick ? 2 : 7;
  const shape = opts.quick ? [8, 8, 28, 28] : [128, 32, 28, 28];
  const size = shape.reduce((a, b) => a * b, 1);
  const fill = (n: number, f: (i: number) => number) => Float32Array.from({ length: n }, (_, i) => f(i));
  const poolFeeds = {
    x: { data: fill(size, (i) => Math.abs(Math.sin(i * 12.9898) * 43758.5453) % 1), dims: shape },
    dy: { data: fill(size / 4, (i) => Math.sin(i)), dims: [shape[0]!, shape[1]!, 14, 14] },
  };
  log(opts.json, `MaxPool forward + gradient on [${shape.join(', ')}]`);
  const s2d = await timeGraph(poolGradient('space-to-depth', shape), poolFeeds, 'out', runs);
  rows.push(
    row('ort', 'maxpool_fwd_grad_space_to_depth_ms', s2d, 'ms', {
      name: 'Expand upsampling',
      value: await timeGraph(poolGradient('expand', shape), poolFeeds, 'out', runs),
    }),
  );
  rows.push(
    row('ort', 'maxpool_fwd_grad_space_to_depth_ms', s2d, 'ms', {
      name: 'MaxPool Indices + MaxUnpool (CPU EP only)',
      value: await timeGraph(poolGradient('indices', shape), poolFeeds, 'out', runs),
    }),
  );
  const dwShape = opts.quick ? [8, 8, 14, 14, 16] : [128, 32, 14, 14, 64];
  log(opts.json, `Conv dW, [${dwShape.slice(0, 4).join(', ')}] → ${dwShape[4]} channels, 3×3`);
  const dwFeeds = {
    x: { data: fill(dwShape[0]! * dwShape[1]! * 196, (i) => Math.sin(i)), dims: dwShape.slice(0, 4) },
    dy: { data: fill(dwShape[0]! * dwShape[4]! * 196, (i) => Math.cos(i)), dims: [dwShape[0]!, dwShape[4]!, 14, 14] },
  };
  rows.push(
    row('ort', 'conv_dw_patches_ms', await timeGraph(convWeightGradient('patches', dwShape), dwFeeds, 'out', runs), 'ms', {
      name: 'batch-as-channel convolution (used on WebGPU)',
      value: await timeGraph(convWeightGradient('batch-as-channel', dwShape), dwFeeds, 'out', runs),
    }),
  );
  log(opts.json, `ReLU gradient on ${size} values`);
  const reluFeeds = { y: { data: fill(size, (i) => Math.max(0, Math.sin(i))), dims: [size] }, dy: { data: fill(size, (i) => Math.cos(i)), dims: [size] } };
  rows.push(
    row('ort', 'relu_grad_where_ms', await timeGraph(reluGradient('where', size), reluFeeds, 'out', runs), 'ms', {
      name: 'Sign(y)·dy',
      value: await timeGraph(reluGradient('sign', size), reluFeeds, 'out', runs),
    }),
  );
  const adamSize = opts.quick ? 1 << 12 : 784 * 512;
  log(opts.json, `Adam's update of ${adamSize} parameters: the last op writes the output, against an Identity after it`);
  const adamFeeds = Object.fromEntries(
    ['p', 'm', 'v', 'grad'].map((k, j) => [k, { data: fill(adamSize, (i) => Math.abs(Math.sin(i + j))), dims: [adamSize] }]),
  );
  rows.push(
    row('ort', 'adam_update_ms_direct', await timeGraph(adamUpdate('direct', adamSize), adamFeeds, 'next', runs), 'ms', {
      name: 'through an Identity',
      value: await timeGraph(adamUpdate('identity', adamSize), adamFeeds, 'next', runs),
    }),
  );
  const pw = opts.quick ? [8, 8, 7, 7, 4] : [128, 64, 14, 14, 32];
  log(opts.json, `1×1 convolution's input gradient, [${pw.slice(0, 4).join(', ')}] ← ${pw[4]} channels`);
  const pwFeeds = { dy: { data: fill(pw[0]! * pw[4]! * pw[2]! * pw[3]!, (i) => Math.cos(i)), dims: [pw[0]!, pw[4]!, pw[2]!, pw[3]!] } };
  rows.push(
    row('ort', 'pointwise_dx_ms_matmul', await timeGraph(pointwiseInputGradient('matmul', pw), pwFeeds, 'out', runs), 'ms', {
      name: 'ConvTranspose',
      value: await timeGraph(pointwiseInputGradient('conv-transpose', pw), pwFeeds, 'out', runs),
    }),
  );
  const steps = opts.quick ? 2 : 192;
  for (const [name, student, n] of [
    ['mlp_784_512_256_10', { kind: 'mlp', hidden: [512, 256] }, steps],
    ['cnn_32_64_128', { kind: 'cnn', blocks: [{ filters: 32 }, { filters: 64 }], dense: [128] }, opts.quick ? 2 : 64],
  ] as const) {
    log(opts.json, `${name}: train steps per session run, 32 (the default) against 8 and 1`);
    const one = await stepsPerRun(student, 1, n);
    const eight = await stepsPerRun(student, opts.quick ? 2 : 8, n);
    const k32 = await stepsPerRun(student, opts.quick ? 2 : 32, n);
    rows.push(row('ort', `step_ms_${name}_32_per_run`, k32, 'ms', { name: '8 steps per run', value: eight }));
    rows.push(row('ort', `step_ms_${name}_32_per_run`, k32, 'ms', { name: '1 step per run', value: one }));
    log(opts.json, `${name}: intra-op threads, every core (${defaultIntraOpThreads()}) against ORT's own default (0, which ran one thread here)`);
    const all = await stepsPerRun(student, opts.quick ? 2 : 32, n);
    const ortDefault = await stepsPerRun(student, opts.quick ? 2 : 32, n, 0);
    rows.push(row('ort', `step_ms_${name}_threads`, all, 'ms', { name: "intraOpNumThreads 0 (ORT's default)", value: ortDefault }));
    log(opts.json, `${name}: one node at a time and spinning threads (used) against inter-op parallelism and parked threads`);
    const sequential = await stepsPerRun(student, opts.quick ? 2 : 32, n);
    const parallel = await stepsPerRun(student, opts.quick ? 2 : 32, n, undefined, { interOpThreads: defaultIntraOpThreads() });
    const parked = await stepsPerRun(student, opts.quick ? 2 : 32, n, undefined, { spinning: false });
    rows.push(
      row('ort', `step_ms_${name}_sequential`, sequential, 'ms', { name: `parallel execution, ${defaultIntraOpThreads()} inter-op threads`, value: parallel }),
    );
    rows.push(row('ort', `step_ms_${name}_spinning`, sequential, 'ms', { name: 'allow_spinning 0', value: parked }));
  }
  const dataRows = opts.quick ? 1024 : 60_000;
  log(opts.json, `data path: one epoch of ${dataRows} 28×28 uint8 rows with a dense cache, and one pass over the dataset, in turns`);
  const d = await dataPath(dataRows, runs);
  rows.push(row('ort', 'data_epoch_ms_stored_bytes', d.stored, 'ms', { name: 'scaled float rows', value: d.scaled }));
  rows.push(row('ort', 'dataset_pass_ms_reused_buffer', d.reused, 'ms', { name: 'a fresh buffer per record batch', value: d.fresh }));
  rows.push(row('ort', 'data_epoch_ms_batches_refilled', d.pooled, 'ms', { name: 'a fresh batch each step (scaled floats both)', value: d.scaled }));
  // Rejected: onnxruntime-node fills a preallocated output and still returns a fresh copy.
  const n = opts.quick ? 1 << 14 : 1_600_000; // the MLP's weights and Adam moments: 6.4 MB
  log(opts.json, `a ${(4 * n) / 1e6} MB output: fetched into a preallocated array against a fresh one`);
  const neg = new Graph('neg');
  neg.input('x', [n]);
  neg.output(neg.node('Neg', ['x'], {}, 'y'), [n]);
  rows.push(
    row('ort', 'output_ms_preallocated', await timeOutput(neg, n, runs, true), 'ms', {
      name: 'a fresh output (what the engine does)',
      value: await timeOutput(neg, n, runs, false),
    }),
  );
  printRows(rows, opts.json);
}

const program = benchProgram('bench-ort').action(main);

await runCli(program);
