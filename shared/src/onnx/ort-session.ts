/**
 * The only file that imports onnxruntime-node.
 *
 * ORT does not fall back between providers inside one `executionProviders` list, and
 * `listSupportedBackends()` lists cuda even when its library is missing, so each provider is
 * tried in its own `InferenceSession.create`, in order of preference.
 *
 * A software Vulkan adapter (Mesa's llvmpipe/lavapipe, SwiftShader) is not a GPU: with one
 * installed, the WebGPU EP loads fine and runs 20× slower than the CPU EP. The automatic choice
 * therefore skips WebGPU on a Linux machine without a GPU device node, and says why; forcing
 * `webgpu` still uses whatever adapter Dawn finds.
 */
import { readdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import * as ort from 'onnxruntime-node';

export type ExecutionProvider = 'cuda' | 'webgpu' | 'cpu';
export const PROVIDER_PREFERENCE: readonly ExecutionProvider[] = ['cuda', 'webgpu', 'cpu'];

export interface TensorInfo {
  readonly name: string;
  /** Dimensions; symbolic ones (e.g. a dynamic batch) are strings. */
  readonly shape: ReadonlyArray<number | string>;
  readonly type: string;
}

export interface OrtSessionOptions {
  /** Force one provider (e.g. from DISTILLATE_EP); creation fails if it is unavailable. */
  readonly provider?: ExecutionProvider;
  /** Threads for one operator (default: every core this process may use, {@link defaultIntraOpThreads}; 0: ORT's own default). */
  readonly intraOpThreads?: number;
  /** Receives one line per provider that could not be used. */
  readonly onProviderFailure?: (provider: ExecutionProvider, reason: string) => void;
  /**
   * Run independent nodes at once on this many inter-op threads (ORT's `parallel` execution
   * mode); default: one node at a time. Measured slower for the train steps here (`bench:ort`).
   */
  readonly interOpThreads?: number;
  /** false: idle intra-op threads sleep instead of spinning (ORT's default is to spin; `bench:ort`). */
  readonly spinning?: boolean;
}

export class ProviderUnavailableError extends Error {
  override readonly name = 'ProviderUnavailableError';
}

export class ModelLoadError extends Error {
  override readonly name = 'ModelLoadError';
}

function tensorInfo(meta: ort.InferenceSession.ValueMetadata): TensorInfo {
  if (!meta.isTensor) return { name: meta.name, shape: [], type: 'non-tensor' };
  return { name: meta.name, shape: meta.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : String(d))), type: meta.type };
}

// ORT's native logger prints every failed provider probe as an error; the failures are
// expected (no CUDA library, no GPU adapter) and reported through onProviderFailure instead.
ort.env.logLevel = 'fatal';

/**
 * Why WebGPU would run on a software adapter here, or undefined when a GPU may be present. On
 * Linux every hardware Vulkan driver needs a device node (/dev/dri/renderD* for Mesa's AMD and
 * Intel drivers, /dev/nvidia* for NVIDIA's); without one, the only adapter Dawn can find is a
 * CPU rasteriser. Elsewhere (macOS, Windows) we cannot tell cheaply and let Dawn decide.
 */
export function softwareOnlyWebGpu(): string | undefined {
  if (process.platform !== 'linux') return undefined;
  const list = (dir: string): string[] => {
    try {
      return readdirSync(dir);
    } catch {
      return [];
    }
  };
  if (list('/dev/dri').some((f) => f.startsWith('renderD')) || list('/dev').some((f) => /^nvidia\d+$/.test(f))) return undefined;
  return 'no GPU device node (/dev/dri/renderD*, /dev/nvidia*), so a Vulkan adapter here is a software one (llvmpipe/lavapipe); force it with DISTILLATE_EP=webgpu';
}

/** What a feed may hold: float32 values, int32 token ids, uint8 pixels, int64 indices. */
export type FeedArray = Float32Array | Int32Array | Uint8Array | BigInt64Array;

function feedTensor(data: FeedArray, dims: readonly number[]): ort.Tensor {
  if (data instanceof Float32Array) return new ort.Tensor('float32', data, dims);
  if (data instanceof Int32Array) return new ort.Tensor('int32', data, dims);
  if (data instanceof Uint8Array) return new ort.Tensor('uint8', data, dims);
  return new ort.Tensor('int64', data, dims);
}

/**
 * ORT's own default (intra_op_num_threads = 0) is documented as one thread per physical core,
 * but on the 2-core VMs this project is measured on it ran every session on one thread: 100 %
 * of a core, and the MLP train step at 29k samples/s against 44k with 2 threads (`npm run
 * bench:ort`, row `step_ms_mlp_784_512_256_10_threads`). So the count is given explicitly: the
 * cores this process may run on (Node's availableParallelism, which honours CPU affinity).
 */
export function defaultIntraOpThreads(): number {
  return availableParallelism();
}

/** Providers that failed on a model that a later provider loaded: unavailable in this process. */
const unavailable = new Set<ExecutionProvider>();

export class OrtSession {
  /** Sessions created and not yet released, in this process: what a leak check counts. */
  static #open = 0;
  readonly #session: ort.InferenceSession;
  #released = false;
  readonly executionProvider: ExecutionProvider;
  readonly inputs: readonly TensorInfo[];
  readonly outputs: readonly TensorInfo[];

  private constructor(session: ort.InferenceSession, provider: ExecutionProvider) {
    this.#session = session;
    this.executionProvider = provider;
    this.inputs = session.inputMetadata.map(tensorInfo);
    this.outputs = session.outputMetadata.map(tensorInfo);
    OrtSession.#open++;
  }

  /** How many sessions are open (created, not released). */
  static get openSessions(): number {
    return OrtSession.#open;
  }

  static async create(model: string | Uint8Array, options: OrtSessionOptions = {}): Promise<OrtSession> {
    const order = options.provider === undefined ? PROVIDER_PREFERENCE.filter((p) => !unavailable.has(p)) : [options.provider];
    const failures: string[] = [];
    for (const provider of order) {
      if (options.provider === undefined && provider === 'webgpu') {
        const why = softwareOnlyWebGpu();
        if (why !== undefined) {
          options.onProviderFailure?.(provider, why);
          continue;
        }
      }
      const sessionOptions: ort.InferenceSession.SessionOptions = {
        executionProviders: [provider],
        graphOptimizationLevel: 'all',
        logSeverityLevel: 4,
        intraOpNumThreads: options.intraOpThreads ?? defaultIntraOpThreads(),
        ...(options.interOpThreads === undefined ? {} : { executionMode: 'parallel', interOpNumThreads: options.interOpThreads }),
        ...(options.spinning === false ? { extra: { session: { intra_op: { allow_spinning: '0' } } } } : {}),
        // For developers: DISTILLATE_ORT_PROFILE=<prefix> writes onnxruntime's per-op profile of
        // every session (<prefix>_<date>.json, Chrome trace format) when the session is released.
        ...(process.env['DISTILLATE_ORT_PROFILE'] ? { enableProfiling: true, profileFilePrefix: process.env['DISTILLATE_ORT_PROFILE'] } : {}),
      };
      try {
        const session =
          typeof model === 'string' ? await ort.InferenceSession.create(model, sessionOptions) : await ort.InferenceSession.create(model, sessionOptions);
        for (const f of failures) unavailable.add(f.split(':')[0] as ExecutionProvider);
        return new OrtSession(session, provider);
      } catch (err) {
        const reason = (err instanceof Error ? err.message : String(err)).split('\n')[0]!;
        failures.push(`${provider}: ${reason}`);
        options.onProviderFailure?.(provider, reason);
        if (provider === 'cpu') throw new ModelLoadError(`cannot load model: ${reason}`);
      }
    }
    throw new ProviderUnavailableError(`execution provider ${order.join(', ')} unavailable (${failures.join('; ')})`);
  }

  /**
   * Run with several float32 inputs; returns the named outputs. `into` holds preallocated
   * output buffers (name → data), filled in place instead of allocating new ones, which keeps
   * a training loop's weights from being re-allocated every step.
   */
  async runMany(
    feeds: Readonly<Record<string, { readonly data: FeedArray; readonly dims: readonly number[] }>>,
    outputNames: readonly string[],
    into?: Readonly<Record<string, { readonly data: Float32Array; readonly dims: readonly number[] }>>,
  ): Promise<Record<string, Float32Array>> {
    const inputs: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) inputs[name] = feedTensor(t.data, t.dims);
    const fetches: Record<string, ort.Tensor | null> = {};
    for (const name of outputNames) {
      const o = into?.[name];
      fetches[name] = o === undefined ? null : new ort.Tensor('float32', o.data, o.dims);
    }
    const result = await this.#session.run(inputs, fetches);
    const out: Record<string, Float32Array> = {};
    for (const name of outputNames) {
      const t = result[name];
      if (t === undefined) throw new Error(`model produced no output "${name}"`);
      if (t.type !== 'float32') throw new Error(`output "${name}" is ${t.type}, expected float32`);
      out[name] = t.data as Float32Array;
    }
    return out;
  }

  /** Run, and say only what each named output is: its element type and dims (any type, the data dropped). */
  async describeOutputs(
    feeds: Readonly<Record<string, { readonly data: FeedArray; readonly dims: readonly number[] }>>,
    outputNames: readonly string[],
  ): Promise<Record<string, { type: string; dims: number[] }>> {
    const inputs: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) inputs[name] = feedTensor(t.data, t.dims);
    const result = await this.#session.run(inputs, outputNames);
    return Object.fromEntries(Object.entries(result).map(([name, t]) => [name, { type: t.type, dims: [...t.dims] }]));
  }

  /** Run with one float32 input; returns the named output's data and dims. */
  async run(inputName: string, data: Float32Array, dims: readonly number[], outputName: string): Promise<{ data: Float32Array; dims: number[] }> {
    const feeds = { [inputName]: new ort.Tensor('float32', data, dims) };
    const result = await this.#session.run(feeds, [outputName]);
    const out = result[outputName];
    if (out === undefined) throw new Error(`model produced no output "${outputName}"`);
    if (out.type !== 'float32') throw new Error(`output "${outputName}" is ${out.type}, expected float32`);
    return { data: out.data as Float32Array, dims: [...out.dims] };
  }

  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    OrtSession.#open--;
    if (process.env['DISTILLATE_ORT_PROFILE']) this.#session.endProfiling();
    await this.#session.release();
  }
}
