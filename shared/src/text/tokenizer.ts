/**
 * Tokenizers for token datasets: a Hugging Face `tokenizer.json` through `@huggingface/tokenizers`
 * (pure TypeScript, no native code), or a byte-level tokenizer that needs no file (ids = UTF-8
 * bytes, vocabulary 256). A tokenizer is identified by its name and the sha256 of its file; a
 * token dataset records both, and a teacher's sidecar names its tokenizer file, so a dataset cut
 * with another tokenizer is refused before any teacher runs on it.
 *
 * `tokenBytes[id]` is the number of UTF-8 bytes token `id` stands for. Bits per byte (the
 * tokenizer-independent measure of a language model) divides a sum of token log-losses by the
 * bytes of the predicted tokens, taken from this table.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { z } from 'zod';

export const TokenizerRefSchema = z.object({
  /** `byte`, or the tokenizer file's base name. */
  name: z.string().min(1),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  vocabSize: z.number().int().positive(),
});
export type TokenizerRef = z.infer<typeof TokenizerRefSchema>;

export interface TextTokenizer {
  readonly ref: TokenizerRef;
  /** UTF-8 bytes per token id ([vocabSize]). */
  readonly tokenBytes: Uint32Array;
  encode(text: string): number[];
  decode(ids: readonly number[]): string;
}

export class TokenizerError extends Error {
  override readonly name = 'TokenizerError';
}

/** The byte tokenizer's identity: a fixed string, hashed like a file would be. */
const BYTE_TOKENIZER_ID = 'distillate.byte-tokenizer/1: token id = UTF-8 byte value, vocabulary 256';

export function byteTokenizer(): TextTokenizer {
  const encoder = new TextEncoder();
  const decoder = new TextDecoder('utf-8');
  return {
    ref: { name: 'byte', sha256: createHash('sha256').update(BYTE_TOKENIZER_ID).digest('hex'), vocabSize: 256 },
    tokenBytes: new Uint32Array(256).fill(1),
    encode: (text) => Array.from(encoder.encode(text)),
    decode: (ids) => decoder.decode(Uint8Array.from(ids)),
  };
}

/** The 256 characters GPT-2's byte-level BPE maps the bytes 0…255 to (bytes_to_unicode). */
function byteLevelAlphabet(): Set<string> {
  const out = new Set<string>();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    out.add(String.fromCodePoint(printable ? b : 256 + n++));
  }
  return out;
}

function usesByteLevel(json: Record<string, unknown>): boolean {
  const mentions = (node: unknown): boolean => {
    if (node === null || typeof node !== 'object') return false;
    const o = node as Record<string, unknown>;
    if (o.type === 'ByteLevel') return true;
    return Object.values(o).some((v) => (Array.isArray(v) ? v.some(mentions) : mentions(v)));
  };
  return mentions(json.pre_tokenizer) || mentions(json.decoder);
}

/**
 * A Hugging Face tokenizer file. A `tokenizer_config.json` is not needed (special-token handling
 * is off: text is encoded as it stands, without added BOS/EOS).
 */
export async function loadHfTokenizer(path: string): Promise<TextTokenizer> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new TokenizerError(`tokenizer ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  let json: Record<string, unknown>;
  let tok: Tokenizer;
  try {
    json = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
    tok = new Tokenizer(json, {});
  } catch (err) {
    throw new TokenizerError(`tokenizer ${path}: not a Hugging Face tokenizer.json (${(err as Error).message})`);
  }
  const vocab = tok.get_vocab(true);
  const vocabSize = Math.max(...vocab.values()) + 1;
  const tokenBytes = new Uint32Array(vocabSize);
  const byteLevel = usesByteLevel(json);
  const alphabet = byteLevelAlphabet();
  const encoder = new TextEncoder();
  for (const [token, id] of vocab) {
    // Byte-level BPE: each character of a token is one byte. Otherwise: the token decoded alone.
    tokenBytes[id] = byteLevel && [...token].every((c) => alphabet.has(c)) ? [...token].length : encoder.encode(tok.decode([id])).length;
  }
  return {
    ref: { name: basename(path), sha256: createHash('sha256').update(bytes).digest('hex'), vocabSize },
    tokenBytes,
    encode: (text) => tok.encode(text, { add_special_tokens: false }).ids,
    decode: (ids) => tok.decode([...ids], { skip_special_tokens: false, clean_up_tokenization_spaces: false }),
  };
}

/** `byte`, or a path to a tokenizer.json. */
export function loadTokenizer(spec: string): Promise<TextTokenizer> {
  return spec === 'byte' ? Promise.resolve(byteTokenizer()) : loadHfTokenizer(spec);
}
