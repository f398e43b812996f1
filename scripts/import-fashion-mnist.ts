/**
 * npm run import:fashion-mnist [-- --from DIR] [-- --out data/fashion-mnist]   # default source: the user cache,
 *                                                 # Debian's package, or a verified download (acquireFashionMnist)
 * npm run import:fashion-mnist -- --labelled 600   # also train-labelled-600.arrow + train-pool.arrow
 * npm run import:fashion-mnist -- --images X-idx3-ubyte.gz --labels Y-idx1-ubyte.gz --out x.arrow [--classes a,b,...]
 */
import { Command, InvalidArgumentError } from 'commander';
import { join } from 'node:path';
import { FASHION_MNIST_CLASSES, acquireFashionMnist, importFashionMnist, importIdxPair, type ImportedSplit, runCli, splitLabelled } from '@distillate/shared';

function summary(name: string, s: ImportedSplit): string {
  return `${name}: ${s.rows} rows → ${s.path} (sha256 ${s.fingerprint.slice(0, 12)}…, per class ${s.perClass.join('/')})`;
}

const program = new Command('import-fashion-mnist')
  .description('Convert Fashion-MNIST (or any IDX images/labels pair) into Distillate dataset files')
  .option('--from <dir>', "directory holding the four Fashion-MNIST .gz files (default: the user cache, Debian's package, or a verified download)")
  .option('--out <path>', 'output directory (or file, with --images/--labels)', 'data/fashion-mnist')
  .option('--images <file>', 'an IDX images file (idx3-ubyte, optionally gzipped)')
  .option('--labels <file>', 'the matching IDX labels file (idx1-ubyte)')
  .option('--classes <names>', "comma-separated class names for --images/--labels (default: Fashion-MNIST's)", (v: string) => {
    const names = v.split(',').map((s) => s.trim());
    if (names.some((n) => n === '')) throw new InvalidArgumentError('class names must be non-empty');
    return names;
  })
  .option('--labelled <n>', 'also split train into its first n/10 images of each class (labelled) and the rest, unlabelled (pool)', (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 10 || n % 10 !== 0) throw new InvalidArgumentError('a positive multiple of 10');
    return n;
  })
  .action(async (opts: { from?: string; out: string; images?: string; labels?: string; classes?: string[]; labelled?: number }) => {
    if ((opts.images === undefined) !== (opts.labels === undefined)) throw new Error('--images and --labels go together');
    if (opts.images !== undefined && opts.labels !== undefined) {
      const out = opts.out.endsWith('.arrow') ? opts.out : `${opts.out}.arrow`;
      const s = await importIdxPair({ images: opts.images, labels: opts.labels, out, classes: opts.classes ?? [...FASHION_MNIST_CLASSES] });
      console.log(summary('dataset', s));
      return;
    }
    const source = await acquireFashionMnist(opts.from === undefined ? {} : { data: opts.from });
    const { train, test } = await importFashionMnist(source.dir, opts.out);
    console.log(summary('train', train));
    console.log(summary('test', test));
    if (opts.labelled !== undefined) {
      const s = await splitLabelled(train.path, {
        perClass: opts.labelled / 10,
        labelled: join(opts.out, `train-labelled-${opts.labelled}.arrow`),
        pool: join(opts.out, 'train-pool.arrow'),
      });
      console.log(`labelled: ${s.labelled.rows} rows → ${s.labelled.path}; pool (labels removed): ${s.pool.rows} rows → ${s.pool.path}`);
    }
  });

await runCli(program);
