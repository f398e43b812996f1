/**
 * The only file that imports onnxruntime-node.
 *
 * ORT does not fall back between providers inside one `executionProviders` list, and
 * `listSupportedBackends()` lists cuda even when its library is missing, so each provider is
 * tried in its own `InferenceSession.create`, in order of preference.
 */
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
  /** Threads for one operator (default: ORT's choice, i.e. all cores). */
  readonly intraOpThreads?: number;
  /** Receives one line per provider that could not be used. */
  readonly onProviderFailure?: (provider: ExecutionProvider, reason: string) => void;
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

/** Providers that failed on a model that a later provider loaded: unavailable in this process. */
const unavailable = new Set<ExecutionProvider>();

export class OrtSession {
  readonly #session: ort.InferenceSession;
  readonly executionProvider: ExecutionProvider;
  readonly inputs: readonly TensorInfo[];
  readonly outputs: readonly TensorInfo[];

  private constructor(session: ort.InferenceSession, provider: ExecutionProvider) {
    this.#session = session;
    this.executionProvider = provider;
    this.inputs = session.inputMetadata.map(tensorInfo);
    this.outputs = session.outputMetadata.map(tensorInfo);
  }

  static async create(model: string | Uint8Array, options: OrtSessionOptions = {}): Promise<OrtSession> {
    const order = options.provider === undefined ? PROVIDER_PREFERENCE.filter((p) => !unavailable.has(p)) : [options.provider];
    const failures: string[] = [];
    for (const provider of order) {
      const sessionOptions: ort.InferenceSession.SessionOptions = {
        executionProviders: [provider],
        graphOptimizationLevel: 'all',
        logSeverityLevel: 4,
        ...(options.intraOpThreads === undefined ? {} : { intraOpNumThreads: options.intraOpThreads }),
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
    await this.#session.release();
  }
}
