/**
 * Import text into a token dataset (shared/src/text/token-dataset.ts): a `.txt` file (one
 * document), a folder of `.txt` files (one document each, named by its relative path), JSON lines
 * (`text` names the field, one document per line) or a Parquet text column (read by hyparquet a
 * row range at a time). Documents stream through: one is tokenized, cut into blocks and written
 * before the next is read, so memory holds one document and one batch of blocks.
 *
 * `split` holds out whole documents (shared `splitDocuments`, stratified by the `stratify` field
 * when given) and writes `<out>-<part>.arrow` for each part and `<out>-train.arrow` for the rest,
 * all in one run. Bytes that are not UTF-8 are replaced by U+FFFD and the lines that held them
 * counted (`replacedLines`); an empty document is refused, naming it, and nothing is written.
 */
import { mkdir, open, readdir, readFile, stat } from 'node:fs/promises';
import { dirname, extname, join, relative } from 'node:path';
import { parquetMetadataAsync, parquetReadObjects, parquetSchema } from 'hyparquet';
import { asyncBufferFromFile } from 'hyparquet/src/node.js';
import { TokenDatasetWriter, cutBlocks, loadTokenizer, splitDocuments, type TextTokenizer } from '@distillate/shared';
import { ImportError } from './sink.js';

export interface TextImport {
  /** A .txt file, a folder of .txt files, a .jsonl/.ndjson file or a .parquet file. */
  readonly source: string;
  /** The dataset to write (.arrow); with `split`, the stem of `<out>-<part>.arrow`. */
  readonly out: string;
  /** `byte`, or a Hugging Face tokenizer.json. */
  readonly tokenizer: string;
  /** Tokens per block (L). */
  readonly block: number;
  /** JSONL/Parquet: the text field (default `text`). */
  readonly text?: string;
  /** JSONL/Parquet: the field naming each document (default `<file>#<line or row>`). */
  readonly key?: string;
  /** Hold out whole documents: part name → fraction, e.g. `{ test: 0.1 }`. */
  readonly split?: Readonly<Record<string, number>>;
  readonly seed?: number;
  /** JSONL/Parquet: split each value of this field separately (e.g. a genre). */
  readonly stratify?: string;
  readonly onProgress?: (documents: number) => void;
}

export interface TextImportPart {
  readonly name: string;
  readonly out: string;
  readonly documents: number;
  readonly rows: number;
  readonly tokens: number;
  /** UTF-8 bytes of the part's text. */
  readonly bytes: number;
  readonly fingerprint: string;
}

export interface TextImportReport {
  readonly source: string;
  readonly tokenizer: TextTokenizer['ref'];
  readonly block: number;
  readonly parts: readonly TextImportPart[];
  /** Lines that held bytes that are not UTF-8 (replaced by U+FFFD). */
  readonly replacedLines: number;
}

interface TextDocument {
  readonly key: string;
  readonly text: string;
  readonly stratum?: string;
}

interface DocumentSource {
  documents(): AsyncGenerator<TextDocument, void, undefined>;
  /** Lines with bytes that are not UTF-8, over the documents read so far. */
  readonly replacedLines: number;
}

const strict = new TextDecoder('utf-8', { fatal: true });
const lenient = new TextDecoder('utf-8');

/** Decodes bytes as UTF-8; each line that is not valid UTF-8 is decoded with U+FFFD and counted. */
function decodeLines(bytes: Uint8Array, count: (lines: number) => void): string {
  try {
    return strict.decode(bytes);
  } catch {
    const text = lenient.decode(bytes);
    let bad = 0;
    let start = 0;
    while (start <= bytes.length) {
      let end = bytes.indexOf(10, start);
      if (end < 0) end = bytes.length;
      try {
        strict.decode(bytes.subarray(start, end));
      } catch {
        bad++;
      }
      start = end + 1;
    }
    count(bad);
    return text;
  }
}

async function* jsonLines(path: string): AsyncGenerator<{ line: number; bytes: Uint8Array }, void, undefined> {
  const fh = await open(path, 'r');
  try {
    let carry = Buffer.alloc(0);
    let line = 0;
    for await (const chunk of fh.createReadStream({ highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
      let buf = carry.length === 0 ? chunk : Buffer.concat([carry, chunk]);
      let nl: number;
      while ((nl = buf.indexOf(10)) >= 0) {
        line++;
        yield { line, bytes: buf.subarray(0, nl) };
        buf = buf.subarray(nl + 1);
      }
      carry = Buffer.from(buf);
    }
    if (carry.length > 0) yield { line: line + 1, bytes: carry };
  } finally {
    await fh.close();
  }
}

function field(row: Record<string, unknown>, name: string, where: string, what: string): string {
  const v = row[name];
  if (typeof v !== 'string') throw new ImportError(`${where}: ${what} field "${name}" is ${v === undefined ? 'missing' : `a ${typeof v}, not text`}`);
  return v;
}

function openSource(opts: TextImport, isDir: boolean): DocumentSource {
  const textField = opts.text ?? 'text';
  let replaced = 0;
  const count = (n: number): void => {
    replaced += n;
  };
  const ext = extname(opts.source).toLowerCase();
  if (!isDir && ext !== '.txt' && (opts.text !== undefined || opts.key !== undefined) && !['.jsonl', '.ndjson', '.parquet'].includes(ext)) {
    throw new ImportError(`${opts.source}: --text and --key are for JSON lines and Parquet`);
  }
  if (isDir || ext === '.txt') {
    if (opts.stratify !== undefined) throw new ImportError(`${opts.source}: --stratify needs a field, so JSON lines or Parquet`);
    return {
      get replacedLines() {
        return replaced;
      },
      async *documents() {
        const files = isDir ? await textFiles(opts.source) : [opts.source];
        if (files.length === 0) throw new ImportError(`${opts.source}: no .txt files in the folder`);
        for (const f of files) yield { key: isDir ? relative(opts.source, f) : f, text: decodeLines(await readFile(f), count) };
      },
    };
  }
  if (ext === '.jsonl' || ext === '.ndjson') {
    return {
      get replacedLines() {
        return replaced;
      },
      async *documents() {
        for await (const { line, bytes } of jsonLines(opts.source)) {
          const raw = decodeLines(bytes, count);
          if (raw.trim() === '') continue;
          let row: Record<string, unknown>;
          try {
            row = JSON.parse(raw) as Record<string, unknown>;
          } catch (err) {
            throw new ImportError(`${opts.source}:${line}: not JSON (${(err as Error).message})`);
          }
          const where = `${opts.source}:${line}`;
          yield {
            key: opts.key === undefined ? `${opts.source}#${line}` : field(row, opts.key, where, 'the key'),
            text: field(row, textField, where, 'the text'),
            ...(opts.stratify === undefined ? {} : { stratum: field(row, opts.stratify, where, 'the --stratify') }),
          };
        }
      },
    };
  }
  if (ext === '.parquet') {
    return {
      get replacedLines() {
        return replaced;
      },
      async *documents() {
        const file = await asyncBufferFromFile(opts.source);
        const md = await parquetMetadataAsync(file);
        const columns = parquetSchema(md).children.map((c) => c.element.name);
        const wanted = [textField, ...(opts.key === undefined ? [] : [opts.key]), ...(opts.stratify === undefined ? [] : [opts.stratify])];
        for (const c of wanted) if (!columns.includes(c)) throw new ImportError(`${opts.source}: no column "${c}" (columns: ${columns.join(', ')})`);
        const rows = Number(md.num_rows);
        for (let start = 0; start < rows; start += 256) {
          const chunk = (await parquetReadObjects({ file, rowStart: start, rowEnd: Math.min(rows, start + 256), columns: wanted })) as Record<
            string,
            unknown
          >[];
          for (let i = 0; i < chunk.length; i++) {
            const where = `${opts.source} row ${start + i}`;
            const row = chunk[i]!;
            yield {
              key: opts.key === undefined ? `${opts.source}#${start + i}` : String(row[opts.key]),
              text: field(row, textField, where, 'the text'),
              ...(opts.stratify === undefined ? {} : { stratum: String(row[opts.stratify]) }),
            };
          }
        }
      },
    };
  }
  throw new ImportError(`${opts.source}: import text from a .txt file, a folder of .txt files, .jsonl/.ndjson or .parquet (found ${ext || 'no extension'})`);
}

async function textFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of (await readdir(d, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() && e.name.toLowerCase().endsWith('.txt')) out.push(p);
    }
  };
  await walk(dir);
  return out;
}

/** Where a part goes: `out` itself without a split, else `<stem>-<part>.arrow`. */
function partPath(out: string, part: string | undefined): string {
  if (part === undefined) return out;
  return `${out.replace(/\.arrow$/i, '')}-${part}.arrow`;
}

const BATCH_BLOCKS = 1024;

export async function importText(opts: TextImport): Promise<TextImportReport> {
  if (!(Number.isInteger(opts.block) && opts.block >= 2)) throw new ImportError(`block length ${opts.block}: needs an integer ≥ 2`);
  let isDir: boolean;
  try {
    isDir = (await stat(opts.source)).isDirectory();
  } catch {
    throw new ImportError(`${opts.source}: no such file or folder`);
  }
  const tokenizer = await loadTokenizer(opts.tokenizer);
  await mkdir(dirname(opts.out), { recursive: true });
  const source = openSource(opts, isDir);

  // A split needs every document's key (and stratum) first: one pass that keeps only those.
  let assign: ((key: string) => string) | undefined;
  if (opts.split !== undefined) {
    const keys: { key: string; stratum?: string }[] = [];
    for await (const d of source.documents()) keys.push(d.stratum === undefined ? { key: d.key } : { key: d.key, stratum: d.stratum });
    let parts: Map<string, string>;
    try {
      parts = splitDocuments(keys, opts.split, opts.seed ?? 1);
    } catch (err) {
      throw new ImportError(`${opts.source}: ${(err as Error).message}`);
    }
    assign = (key) => parts.get(key)!;
  }
  const names = opts.split === undefined ? [undefined] : ['train', ...Object.keys(opts.split).sort()];
  const L = opts.block;
  interface Part {
    readonly writer: TokenDatasetWriter;
    documents: number;
    /** The documents' tokens (a token in two overlapping blocks counts once). */
    tokenCount: number;
    bytes: number;
    rows: number;
    ids: Int32Array;
    tokens: Int32Array;
    sources: string[];
  }
  const parts = new Map<string | undefined, Part>(
    names.map((n) => [
      n,
      {
        writer: TokenDatasetWriter.create(partPath(opts.out, n), tokenizer, L),
        documents: 0,
        tokenCount: 0,
        bytes: 0,
        rows: 0,
        ids: new Int32Array(BATCH_BLOCKS),
        tokens: new Int32Array(BATCH_BLOCKS * L),
        sources: [],
      },
    ]),
  );
  const flush = async (p: Part): Promise<void> => {
    if (p.sources.length === 0) return;
    const n = p.sources.length;
    await p.writer.append({ ids: p.ids.subarray(0, n), tokens: p.tokens.subarray(0, n * L), sources: p.sources });
    p.sources = [];
  };
  let nextId = 0;
  let documents = 0;
  try {
    for await (const d of source.documents()) {
      if (d.text.trim() === '') throw new ImportError(`${opts.source}: document ${d.key} is empty; remove it or give it text`);
      const ids = tokenizer.encode(d.text);
      if (ids.length < 2) throw new ImportError(`${opts.source}: document ${d.key} has ${ids.length} token; a document needs at least 2 to predict one`);
      const p = parts.get(assign?.(d.key))!;
      const blocks = cutBlocks(ids, L);
      for (let b = 0; b < blocks.length / L; b++) {
        const i = p.sources.length;
        p.ids[i] = nextId++;
        p.tokens.set(blocks.subarray(b * L, (b + 1) * L), i * L);
        p.sources.push(d.key);
        p.rows++;
        if (p.sources.length === BATCH_BLOCKS) await flush(p);
      }
      p.documents++;
      p.tokenCount += ids.length;
      p.bytes += Buffer.byteLength(d.text);
      documents++;
      opts.onProgress?.(documents);
    }
    if (documents === 0) throw new ImportError(`${opts.source}: no documents`);
    const out: TextImportPart[] = [];
    for (const [name, p] of parts) {
      await flush(p);
      if (p.rows === 0) throw new ImportError(`${opts.source}: split part ${name ?? 'all'} got no documents; use a larger fraction or more documents`);
    }
    for (const [name, p] of parts) {
      const w = await p.writer.close();
      out.push({ name: name ?? 'all', out: w.path, documents: p.documents, rows: w.rows, tokens: p.tokenCount, bytes: p.bytes, fingerprint: w.fingerprint });
    }
    return { source: opts.source, tokenizer: tokenizer.ref, block: L, parts: out, replacedLines: source.replacedLines };
  } catch (err) {
    await Promise.all([...parts.values()].map((p) => p.writer.abort().catch(() => undefined)));
    throw err;
  }
}
