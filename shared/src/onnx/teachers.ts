/**
 * Teachers: every `*.onnx` under the models directory, named by its file stem, with an
 * optional sidecar `<name>.json`. Sessions load lazily, and each model is hashed once.
 */
import { readFile, readdir } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { sha256File } from '../internal/arrow-io.js';
import { z } from 'zod';
import { TeacherError } from './errors.js';
import { ModelLoadError, OrtSession, ProviderUnavailableError, type ExecutionProvider, type TensorInfo } from './ort-session.js';
import { listTensors, withOutputs, type TeacherTensor } from './tensors.js';

const TensorEntrySchema = z.object({ name: z.string(), dtype: z.string(), dims: z.array(z.union([z.number(), z.string()])) }).strict();

export const TeacherSidecarSchema = z
  .object({
    classes: z.array(z.string()).min(1).optional(),
    /** Applied after the dataset's own scaling: x' = (x − mean[c]) / std[c], per channel. */
    normalization: z
      .union([
        z.object({ mean: z.array(z.number()).min(1), std: z.array(z.number().positive()).min(1) }),
        z.object({ scale: z.number(), offset: z.number().default(0) }),
      ])
      .optional(),
    /** Layout of the model's image input; default inferred from its shape (rank 4 with 1 or 3 in dim 1 → NCHW). */
    layout: z.enum(['NCHW', 'NHWC', 'flat']).optional(),
    /** Which output holds the logits (default: the first). */
    logitsOutput: z.string().optional(),
    /** Which input takes the samples (default: the first). */
    input: z.string().optional(),
    /**
     * A causal language model: integer token ids [B, L] in, logits [B, L, V] out. It names its
     * tokenizer file (beside the model) and that file's sha256; a token dataset cut by another
     * tokenizer is refused.
     */
    kind: z.enum(['classifier', 'causal-lm']).optional(),
    tokenizer: z.string().optional(),
    tokenizerSha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/)
      .optional(),
    /** Longest block the model takes (its learned positions). */
    context: z.number().int().positive().optional(),
    vocabSize: z.number().int().positive().optional(),
    /** Every input and output of the model with its element type and dims (written with exported students; informative). */
    tensors: z
      .object({
        inputs: z.array(TensorEntrySchema),
        outputs: z.array(TensorEntrySchema),
      })
      .strict()
      .optional(),
  })
  .strict();
export type TeacherSidecar = z.infer<typeof TeacherSidecarSchema>;

export interface TeacherInfo {
  readonly name: string;
  readonly sha256: string;
  readonly inputs: readonly TensorInfo[];
  readonly outputs: readonly TensorInfo[];
  readonly classes: readonly string[];
  readonly executionProvider: ExecutionProvider;
  readonly layout: 'NCHW' | 'NHWC' | 'flat';
  /** Shape of one sample as the model takes it (without the batch dimension). */
  readonly sampleShape: readonly number[];
  /** A causal language model (sidecar `kind: causal-lm`). */
  readonly lm?: {
    readonly context: number;
    readonly vocabSize: number;
    readonly tokenizer: { readonly name: string; readonly sha256: string };
    readonly inputType: 'int64' | 'int32';
  };
}

export interface TeacherOptions {
  readonly provider?: ExecutionProvider;
  readonly intraOpThreads?: number;
  readonly onProviderFailure?: (teacher: string, provider: ExecutionProvider, reason: string) => void;
}

export class Teacher {
  readonly name: string;
  readonly path: string;
  readonly sidecar: TeacherSidecar;
  #loading: Promise<{ session: OrtSession; info: TeacherInfo }> | undefined;
  #tensors: Promise<TeacherTensor[]> | undefined;
  /** Copies of the model with intermediate tensors as extra outputs, by the list of names. */
  readonly #featureSessions = new Map<string, Promise<OrtSession>>();
  readonly #options: TeacherOptions;

  constructor(name: string, path: string, sidecar: TeacherSidecar, options: TeacherOptions) {
    this.name = name;
    this.path = path;
    this.sidecar = sidecar;
    this.#options = options;
  }

  /** Load the session (once) and describe the model. */
  load(): Promise<{ session: OrtSession; info: TeacherInfo }> {
    this.#loading ??= this.#load();
    // A failed load is not cached: the file may be fixed and retried.
    this.#loading.catch(() => (this.#loading = undefined));
    return this.#loading;
  }

  async info(): Promise<TeacherInfo> {
    return (await this.load()).info;
  }

  async #load(): Promise<{ session: OrtSession; info: TeacherInfo }> {
    const { sha256 } = await sha256File(this.path);
    let session: OrtSession;
    try {
      session = await OrtSession.create(this.path, {
        ...(this.#options.provider === undefined ? {} : { provider: this.#options.provider }),
        ...(this.#options.intraOpThreads === undefined ? {} : { intraOpThreads: this.#options.intraOpThreads }),
        onProviderFailure: (p, r) => this.#options.onProviderFailure?.(this.name, p, r),
      });
    } catch (err) {
      if (err instanceof ModelLoadError) throw new TeacherError('bad_model', 'bad_model', `teacher ${this.name}: ${err.message}`);
      if (err instanceof ProviderUnavailableError)
        throw new TeacherError('provider_unavailable', 'provider_unavailable', `teacher ${this.name}: ${err.message}`);
      throw err;
    }
    try {
      if (this.sidecar.kind === 'causal-lm') return { session, info: this.#lmInfo(session, sha256) };
      const input = this.sidecar.input === undefined ? session.inputs[0] : session.inputs.find((i) => i.name === this.sidecar.input);
      const output = this.sidecar.logitsOutput === undefined ? session.outputs[0] : session.outputs.find((o) => o.name === this.sidecar.logitsOutput);
      if (input === undefined) throw new TeacherError('bad_model', 'bad_model', `teacher ${this.name}: no input ${this.sidecar.input ?? ''}`);
      if (output === undefined) throw new TeacherError('bad_model', 'bad_model', `teacher ${this.name}: no output ${this.sidecar.logitsOutput ?? ''}`);
      if (input.type !== 'float32')
        throw new TeacherError('bad_model', 'bad_model', `teacher ${this.name}: input ${input.name} is ${input.type}; only float32 inputs are supported`);
      const sampleShape = input.shape.slice(1);
      if (sampleShape.some((d) => typeof d !== 'number')) {
        throw new TeacherError(
          'bad_model',
          'bad_model',
          `teacher ${this.name}: input ${input.name} has shape [${input.shape.join(', ')}]; only the batch dimension may be dynamic`,
        );
      }
      const lastOut = output.shape.at(-1);
      const classes = this.sidecar.classes ?? (typeof lastOut === 'number' ? Array.from({ length: lastOut }, (_, i) => `class-${i}`) : undefined);
      if (classes === undefined)
        throw new TeacherError(
          'bad_model',
          'bad_model',
          `teacher ${this.name}: output ${output.name} has a dynamic class dimension; give "classes" in ${this.name}.json`,
        );
      if (typeof lastOut === 'number' && lastOut !== classes.length) {
        throw new TeacherError(
          'bad_model',
          'bad_model',
          `teacher ${this.name}: ${this.name}.json lists ${classes.length} classes but output ${output.name} has ${lastOut}`,
        );
      }
      const dims = sampleShape as number[];
      const layout = this.sidecar.layout ?? (dims.length === 3 ? (dims[0] === 1 || dims[0] === 3 ? 'NCHW' : 'NHWC') : 'flat');
      const info: TeacherInfo = {
        name: this.name,
        sha256,
        inputs: session.inputs,
        outputs: session.outputs,
        classes,
        executionProvider: session.executionProvider,
        layout,
        sampleShape: dims,
      };
      return { session, info };
    } catch (err) {
      await session.release();
      throw err;
    }
  }

  #lmInfo(session: OrtSession, sha256: string): TeacherInfo {
    const bad = (why: string) => new TeacherError('bad_model', 'bad_model', `teacher ${this.name}: ${why}`);
    const s = this.sidecar;
    const input = s.input === undefined ? session.inputs[0] : session.inputs.find((i) => i.name === s.input);
    const output = s.logitsOutput === undefined ? session.outputs[0] : session.outputs.find((o) => o.name === s.logitsOutput);
    if (input === undefined || output === undefined) throw bad(`no ${input === undefined ? `input ${s.input ?? ''}` : `output ${s.logitsOutput ?? ''}`}`);
    if (input.type !== 'int64' && input.type !== 'int32') throw bad(`a causal LM takes integer token ids; input ${input.name} is ${input.type}`);
    if (input.shape.length !== 2) throw bad(`a causal LM takes token ids [batch, length]; input ${input.name} has shape [${input.shape.join(', ')}]`);
    if (output.shape.length !== 3)
      throw bad(`a causal LM gives logits [batch, length, vocabulary]; output ${output.name} has shape [${output.shape.join(', ')}]`);
    const lastOut = output.shape[2];
    const vocabSize = s.vocabSize ?? (typeof lastOut === 'number' ? lastOut : undefined);
    if (vocabSize === undefined) throw bad(`output ${output.name} has a dynamic vocabulary dimension; give "vocabSize" in ${this.name}.json`);
    if (typeof lastOut === 'number' && lastOut !== vocabSize)
      throw bad(`${this.name}.json says vocabSize ${vocabSize} but output ${output.name} has ${lastOut}`);
    if (s.context === undefined) throw bad(`give "context" (the longest block it takes) in ${this.name}.json`);
    if (s.tokenizer === undefined || s.tokenizerSha256 === undefined)
      throw bad(`give "tokenizer" (its tokenizer file) and "tokenizerSha256" in ${this.name}.json`);
    return {
      name: this.name,
      sha256,
      inputs: session.inputs,
      outputs: session.outputs,
      classes: [],
      executionProvider: session.executionProvider,
      layout: 'flat',
      sampleShape: [s.context],
      lm: { context: s.context, vocabSize, tokenizer: { name: s.tokenizer, sha256: s.tokenizerSha256 }, inputType: input.type },
    };
  }

  /**
   * A causal LM's logits for `rows` blocks of L tokens ([rows, L]; −1 is padding, fed as token 0
   * and masked by whoever reads the result): [rows, L, V]. With `into` (rows × L × V floats), the
   * logits are written there rather than into a fresh buffer per call.
   */
  async tokenLogits(tokens: Int32Array, rows: number, L: number, into?: Float32Array): Promise<Float32Array> {
    const { session, info } = await this.load();
    if (info.lm === undefined) throw new TeacherError('bad_request', 'not_a_language_model', `teacher ${this.name} is not a causal language model`);
    if (L > info.lm.context)
      throw new TeacherError('bad_request', 'block_too_long', `blocks of ${L} tokens are longer than teacher ${this.name}'s context of ${info.lm.context}`);
    const inputName = this.sidecar.input ?? info.inputs[0]!.name;
    const outputName = this.sidecar.logitsOutput ?? info.outputs[0]!.name;
    const fed = info.lm.inputType === 'int64' ? new BigInt64Array(tokens.length) : new Int32Array(tokens.length);
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i]! < 0 ? 0 : tokens[i]!;
      if (fed instanceof BigInt64Array) fed[i] = BigInt(t);
      else fed[i] = t;
    }
    const dims = [rows, L, info.lm.vocabSize];
    const out = await session.runMany(
      { [inputName]: { data: fed, dims: [rows, L] } },
      [outputName],
      into === undefined ? undefined : { [outputName]: { data: into, dims } },
    );
    const data = out[outputName]!;
    if (data.length !== rows * L * info.lm.vocabSize) {
      throw new TeacherError(
        'bad_output',
        'bad_output',
        `teacher ${this.name}: output ${outputName} holds ${data.length} values, expected [${rows}, ${L}, ${info.lm.vocabSize}]`,
      );
    }
    return data;
  }

  /**
   * The model's per-sample intermediate tensors (tensors.ts), listed once per loaded model: what
   * feature capture can store. Runs a copy of the model on the CPU EP.
   */
  tensors(): Promise<TeacherTensor[]> {
    this.#tensors ??= (async () => {
      const { info } = await this.load();
      try {
        return await listTensors(await readFile(this.path), info.sampleShape);
      } catch (err) {
        // A model that serves logits but cannot be listed (two inputs, an op that fails on zeros): the model's limit, said in one line.
        throw new TeacherError('bad_model', 'cannot_list_tensors', `teacher ${this.name}: cannot list its tensors: ${(err as Error).message.split('\n')[0]}`);
      }
    })();
    this.#tensors.catch(() => (this.#tensors = undefined));
    return this.#tensors;
  }

  /**
   * Logits and the intermediate tensors `names` (float32, per sample) for `rows` samples, from a
   * copy of the model with those tensors as extra outputs (tensors.ts `withOutputs`): one session
   * per list of names, made on first use on the same execution provider. The file is untouched.
   */
  async logitsAndTensors(input: Float32Array, rows: number, names: readonly string[]): Promise<{ logits: Float32Array; tensors: Float32Array[] }> {
    if (names.length === 0) return { logits: await this.logits(input, rows), tensors: [] };
    const { info } = await this.load();
    const key = names.join('\u0000');
    let session = this.#featureSessions.get(key);
    if (session === undefined) {
      session = (async () =>
        OrtSession.create(withOutputs(await readFile(this.path), names), {
          ...(this.#options.provider === undefined ? {} : { provider: this.#options.provider }),
          ...(this.#options.intraOpThreads === undefined ? {} : { intraOpThreads: this.#options.intraOpThreads }),
          onProviderFailure: (p, r) => this.#options.onProviderFailure?.(this.name, p, r),
        }))();
      this.#featureSessions.set(key, session);
      session.catch(() => this.#featureSessions.delete(key));
    }
    const inputName = this.sidecar.input ?? info.inputs[0]!.name;
    const outputName = this.sidecar.logitsOutput ?? info.outputs[0]!.name;
    const out = await (await session).runMany({ [inputName]: { data: input, dims: [rows, ...info.sampleShape] } }, [outputName, ...names]);
    const logits = out[outputName]!;
    if (logits.length !== rows * info.classes.length)
      throw new TeacherError(
        'bad_output',
        'bad_output',
        `teacher ${this.name}: output ${outputName} holds ${logits.length} values, expected [${rows}, ${info.classes.length}]`,
      );
    return { logits, tensors: names.map((n) => out[n]!) };
  }

  /** Logits for `rows` samples already in the model's layout and normalisation. */
  async logits(input: Float32Array, rows: number): Promise<Float32Array> {
    const { session, info } = await this.load();
    if (info.lm !== undefined) throw new TeacherError('bad_request', 'language_model', `teacher ${this.name} is a causal language model: give it token ids`);
    const inputName = this.sidecar.input ?? info.inputs[0]!.name;
    const outputName = this.sidecar.logitsOutput ?? info.outputs[0]!.name;
    const out = await session.run(inputName, input, [rows, ...info.sampleShape], outputName);
    if (out.data.length !== rows * info.classes.length) {
      throw new TeacherError(
        'bad_output',
        'bad_output',
        `teacher ${this.name}: output ${outputName} has shape [${out.dims.join(', ')}], expected [${rows}, ${info.classes.length}]`,
      );
    }
    return out.data;
  }

  async release(): Promise<void> {
    const loading = this.#loading;
    this.#loading = undefined;
    this.#tensors = undefined;
    const features = [...this.#featureSessions.values()];
    this.#featureSessions.clear();
    for (const f of features) await (await f.catch(() => undefined))?.release();
    if (loading !== undefined) await (await loading.catch(() => undefined))?.session.release();
  }
}

export class TeacherRegistry {
  readonly dir: string;
  readonly #teachers = new Map<string, Teacher>();
  readonly #options: TeacherOptions;

  private constructor(dir: string, options: TeacherOptions) {
    this.dir = dir;
    this.#options = options;
  }

  static async open(dir: string, options: TeacherOptions = {}): Promise<TeacherRegistry> {
    const registry = new TeacherRegistry(dir, options);
    await registry.rescan();
    return registry;
  }

  /** Pick up models added since the last scan (existing sessions are kept). */
  async rescan(): Promise<void> {
    const names = (await readdir(this.dir)).filter((f) => f.endsWith('.onnx')).sort();
    for (const file of names) {
      const name = basename(file, '.onnx');
      if (this.#teachers.has(name)) continue;
      const sidecarPath = join(this.dir, `${name}.json`);
      let sidecar: TeacherSidecar = {};
      const raw = await readFile(sidecarPath, 'utf8').catch(() => undefined);
      if (raw !== undefined) {
        const parsed = TeacherSidecarSchema.safeParse(safeJson(raw));
        if (!parsed.success) throw new Error(`${sidecarPath}: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'root'}: ${i.message}`).join('; ')}`);
        sidecar = parsed.data;
      }
      this.#teachers.set(name, new Teacher(name, join(this.dir, file), sidecar, this.#options));
    }
  }

  names(): string[] {
    return [...this.#teachers.keys()];
  }

  get(name: string): Teacher {
    const t = this.#teachers.get(name);
    if (t === undefined) throw new TeacherError('not_found', 'unknown_teacher', `no teacher named "${name}" (have: ${this.names().join(', ') || 'none'})`);
    return t;
  }

  async releaseAll(): Promise<void> {
    await Promise.all([...this.#teachers.values()].map((t) => t.release()));
  }
}

function safeJson(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch (err) {
    throw new TeacherError('bad_request', 'bad_sidecar', `invalid JSON: ${(err as Error).message}`);
  }
}
