/**
 * The one file that chooses the TF.js backend. Preference: native `@tensorflow/tfjs-node-gpu`,
 * then `@tensorflow/tfjs-node` (optional dependencies: they download libtensorflow at install
 * and are absent where that is impossible), then WebGPU through the `webgpu` package (Dawn)
 * when an adapter exists, then wasm, then the pure-JS cpu backend.
 *
 * `tf.setBackend` resolving to false silently leaves the previous backend active, so the
 * active backend is asserted after every switch.
 */
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { registerWasmConv2DBackpropFilter } from './internal/wasm-conv2d-backprop-filter.js';

export type BackendName = 'tensorflow' | 'webgpu' | 'wasm' | 'cpu';
export const BACKEND_PREFERENCE: readonly BackendName[] = ['tensorflow', 'webgpu', 'wasm', 'cpu'];

export class BackendUnavailableError extends Error {
  override readonly name = 'BackendUnavailableError';
}

export interface BackendChoice {
  readonly name: BackendName;
  /** For 'tensorflow': which native package loaded. */
  readonly detail: string;
  /** Why each more-preferred backend was skipped. */
  readonly skipped: ReadonlyArray<{ name: BackendName; reason: string }>;
}

const require = createRequire(import.meta.url);
let current: BackendChoice | undefined;

async function tryTensorflow(): Promise<string> {
  for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    try {
      await import(pkg);
      return pkg;
    } catch {
      // not installed (the usual case on machines without internet at install time)
    }
  }
  throw new Error('neither @tensorflow/tfjs-node-gpu nor @tensorflow/tfjs-node is installed');
}

/** A CPU rasteriser posing as a GPU: Mesa's llvmpipe/lavapipe, SwiftShader, or an adapter flagged as fallback. */
function softwareAdapter(adapter: unknown): string | undefined {
  const info =
    (adapter as { info?: { isFallbackAdapter?: boolean; description?: string; device?: string; architecture?: string; vendor?: string } }).info ?? {};
  const text = [info.description, info.device, info.architecture, info.vendor].filter(Boolean).join(' ');
  if (info.isFallbackAdapter === true || /llvmpipe|lavapipe|swiftshader/i.test(text)) return text || 'fallback adapter';
  return undefined;
}

async function tryWebgpu(forced: boolean): Promise<string> {
  let gpu: unknown;
  try {
    const dawn = (await import('webgpu')) as unknown as { create: (opts: string[]) => unknown; globals?: Record<string, unknown> };
    if (dawn.globals !== undefined) Object.assign(globalThis, dawn.globals);
    gpu = dawn.create([]);
  } catch (err) {
    throw new Error(`webgpu package unavailable (${(err as Error).message.split('\n')[0]})`);
  }
  const adapter = await (gpu as { requestAdapter: () => Promise<unknown> }).requestAdapter();
  if (adapter === null || adapter === undefined) throw new Error('no WebGPU adapter (no Vulkan GPU)');
  const software = softwareAdapter(adapter);
  // Measured: training on llvmpipe is slower than wasm and produced NaN losses; it is not a GPU.
  if (software !== undefined && !forced) throw new Error(`skipped the software adapter ${software} (not a GPU); backend: webgpu forces it`);
  // tfjs-backend-webgpu reads navigator.gpu when it is imported, so set it first.
  Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  await import('@tensorflow/tfjs-backend-webgpu');
  return 'webgpu (Dawn)';
}

async function tryWasm(): Promise<string> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  const dist = dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
  wasm.setWasmPaths(`${dist}/`);
  registerWasmConv2DBackpropFilter();
  return `wasm (${dist})`;
}

async function activate(name: BackendName, forced: boolean): Promise<string> {
  let detail = 'pure JS';
  if (name === 'tensorflow') detail = await tryTensorflow();
  else if (name === 'webgpu') detail = await tryWebgpu(forced);
  else if (name === 'wasm') detail = await tryWasm();
  const ok = await tf.setBackend(name);
  await tf.ready();
  if (!ok || tf.getBackend() !== name) {
    throw new Error(`tf.setBackend('${name}') left the active backend as '${tf.getBackend()}'`);
  }
  return detail;
}

/**
 * Choose (once) and activate a backend. `forced` takes exactly that one and fails clearly
 * when it is unavailable.
 */
export async function selectBackend(forced?: BackendName): Promise<BackendChoice> {
  if (current !== undefined && (forced === undefined || forced === current.name)) return current;
  const order = forced === undefined ? BACKEND_PREFERENCE : [forced];
  const skipped: Array<{ name: BackendName; reason: string }> = [];
  for (const name of order) {
    try {
      const detail = await activate(name, forced !== undefined);
      current = { name, detail, skipped };
      return current;
    } catch (err) {
      skipped.push({ name, reason: (err as Error).message.split('\n')[0]! });
    }
  }
  throw new BackendUnavailableError(`TF.js backend ${order.join(', ')} unavailable: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
}

/** Download a tensor's values (async: `dataSync` fails on webgpu). */
export async function readFloats(t: tf.Tensor): Promise<Float32Array> {
  return (await t.data()) as Float32Array;
}
