/**
 * npm run import:fashion-mnist -- --from /usr/share/datasets/fashion-mnist --out data/fashion-mnist
 * npm run import:fashion-mnist -- --images X-idx3-ubyte.gz --labels Y-idx1-ubyte.gz --out x.arrow [--classes a,b,...]
 */
import { Command, InvalidArgumentError } from 'commander';
import { FASHION_MNIST_CLASSES, FASHION_MNIST_DEBIAN_DIR, importFashionMnist, importIdxPair, type ImportedSplit, runCli } from '@distillate/shared';

function summary(name: string, s: ImportedSplit): string {
  return `${name}: ${s.rows} rows → ${s.path} (sha256 ${s.fingerprint.slice(0, 12)}…, per class ${s.perClass.join('/')})`;
}

const program = new Command('import-fashion-mnist')
  .description('Convert Fashion-MNIST (or any IDX images/labels pair) into Distillate dataset files')
  .option('--from <dir>', 'directory holding the four Fashion-MNIST .gz files', FASHION_MNIST_DEBIAN_DIR)
  .option('--out <path>', 'output directory (or file, with --images/--labels)', 'data/fashion-mnist')
  .option('--images <file>', 'an IDX images file (idx3-ubyte, optionally gzipped)')
  .option('--labels <file>', 'the matching IDX labels file (idx1-ubyte)')
  .option('--classes <names>', 'comma-separated class names for --images/--labels (default: Fashion-MNIST\'s)', (v: string) => {
    const names = v.split(',').map((s) => s.trim());
    if (names.some((n) => n === '')) throw new InvalidArgumentError('class names must be non-empty');
    return names;
  })
  .action(async (opts: { from: string; out: string; images?: string; labels?: string; classes?: string[] }) => {
    if ((opts.images === undefined) !== (opts.labels === undefined)) throw new Error('--images and --labels go together');
    if (opts.images !== undefined && opts.labels !== undefined) {
      const out = opts.out.endsWith('.arrow') ? opts.out : `${opts.out}.arrow`;
      const s = await importIdxPair({ images: opts.images, labels: opts.labels, out, classes: opts.classes ?? [...FASHION_MNIST_CLASSES] });
      console.log(summary('dataset', s));
      return;
    }
    const { train, test } = await importFashionMnist(opts.from, opts.out);
    console.log(summary('train', train));
    console.log(summary('test', test));
  });

await runCli(program);
