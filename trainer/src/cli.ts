/**
 * distillate-train --recipe r.yaml [overrides]      train (progress bar with ETA)
 * distillate-train eval --run runs/x --data test.arrow
 * distillate-train export --run runs/x [--out student.onnx]
 */
import { copyFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { Presets, SingleBar } from 'cli-progress';
import { DatasetReader, isTokenDataset, runCli, writeFileAtomic } from '@distillate/shared';
import type { BackendName } from './backend.js';
import { readRun, renderComparison } from './compare.js';
import { evaluate } from './evaluate.js';
import { exportAndCheck } from './export-check.js';
import { exportOnnx } from './export-onnx.js';
import { loadLayersModel } from './model-io.js';
import { progressCallbacks } from './progress.js';
import { loadRecipe } from './recipe.js';
import { runPredictor } from './run-student.js';
import { train } from './train.js';
import { trainLanguageModel } from './lm/train-lm.js';
import { generate } from './lm/generate.js';

const int = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive integer');
  return String(n);
};
const num = (v: string) => {
  if (!Number.isFinite(Number(v))) throw new InvalidArgumentError('expected a number');
  return v;
};

interface TrainFlags {
  recipe?: string;
  set: string[];
  epochs?: string;
  batchSize?: string;
  lr?: string;
  seed?: string;
  name?: string;
  out?: string;
  backend?: BackendName;
  engine?: 'ort' | 'tfjs';
  ep?: 'cuda' | 'webgpu' | 'cpu';
  resume?: boolean;
  threads?: number;
}

export function buildProgram(): Command {
  const program = new Command('distillate-train')
    .description('Train student networks from cached teacher logits (ONNX Runtime, or TF.js)')
    // A subcommand's options are its own (report --out, export --out), not the training flags of the same name.
    .enablePositionalOptions();
  program
    .option('--recipe <file>', 'recipe (YAML or JSON); required to train')
    .option(
      '--set <key=value>',
      'override any recipe field (repeatable), e.g. --set distill.params.temperature=2',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option('--epochs <n>', 'override epochs', int)
    .option('--batch-size <n>', 'override batchSize', int)
    .option('--lr <lr>', 'override optimizer.lr', num)
    .option('--seed <n>', 'override seed', num)
    .option('--name <name>', 'override the run name')
    .option('--out <dir>', 'override the runs directory')
    .addOption(new Option('--engine <name>', 'what trains the student (recipe engine)').choices(['ort', 'tfjs']))
    .addOption(
      new Option('--ep <provider>', 'force an ONNX Runtime execution provider (recipe executionProvider; env DISTILLATE_EP)').choices([
        'cuda',
        'webgpu',
        'cpu',
      ]),
    )
    .option('--threads <n>', 'ORT intra-op threads (recipe threads; env DISTILLATE_THREADS; default every core)', int)
    .addOption(new Option('--backend <name>', 'force a TF.js backend').choices(['tensorflow', 'webgpu', 'wasm', 'cpu']))
    .option('--resume', 'continue runs/<name> from its last checkpoint')
    .action(async (f: TrainFlags) => {
      const overrides = [
        ...f.set,
        ...(f.epochs === undefined ? [] : [`epochs=${f.epochs}`]),
        ...(f.batchSize === undefined ? [] : [`batchSize=${f.batchSize}`]),
        ...(f.lr === undefined ? [] : [`optimizer.lr=${f.lr}`]),
        ...(f.seed === undefined ? [] : [`seed=${f.seed}`]),
        ...(f.name === undefined ? [] : [`name=${f.name}`]),
        ...(f.out === undefined ? [] : [`out=${f.out}`]),
        ...(f.backend === undefined ? [] : [`backend=${f.backend}`]),
        ...(f.engine === undefined ? [] : [`engine=${f.engine}`]),
        ...(f.ep === undefined ? [] : [`executionProvider=${f.ep}`]),
        ...(f.threads === undefined ? [] : [`threads=${f.threads}`]),
      ];
      if (f.recipe === undefined) throw new Error('--recipe <file> is required to train (or use the eval / export commands)');
      const recipe = await loadRecipe(f.recipe, overrides);
      if (await isTokenDataset(recipe.data.train)) {
        const bar = new SingleBar(
          { format: 'epoch [{bar}] {percentage}% | {value}/{total} blocks | ETA {eta_formatted}', hideCursor: true, etaBuffer: 50 },
          Presets.shades_classic,
        );
        let started = false;
        const lm = await trainLanguageModel(recipe, {
          resume: f.resume === true,
          onBatch: (done, total) => {
            if (!process.stderr.isTTY) return;
            if (!started) bar.start(total, 0);
            started = true;
            bar.update(done);
          },
          onEpochEnd: (m) => {
            if (started) bar.stop();
            started = false;
            const t = m.test === undefined ? '' : ` · test ${m.test.bitsPerByte.toFixed(4)} bits/byte, perplexity ${m.test.perplexity.toFixed(2)}`;
            console.log(
              `epoch ${m.epoch} · ${Object.entries(m.loss)
                .map(([k, v]) => `${k} ${v.toFixed(4)}`)
                .join(' · ')}${t} · ${Math.round(m.tokensPerSecond)} tokens/s`,
            );
          },
        });
        console.log(`engine ort on ${lm.engine.device}; ${lm.parameters} parameters; student.onnx and student.json in ${lm.runDir}`);
        return;
      }
      const result = await train(recipe, { resume: f.resume === true, ...progressCallbacks() });
      for (const line of result.engine.skipped) console.log(`skipped ${line}`);
      console.log(`engine ${result.engine.name} on ${result.engine.device}; ${result.parameters} parameters; ${result.latencyMs.toFixed(3)} ms/sample`);
      if (result.calibration !== undefined) {
        const c = result.calibration;
        console.log(
          `calibrated: τ ${c.temperature.toFixed(3)} on ${c.rows} rows of ${c.data} (ECE there ${(c.eceBefore * 100).toFixed(2)}% → ${(c.eceAfter * 100).toFixed(2)}%)`,
        );
      }
      if (result.test !== undefined) console.log(`test accuracy ${(result.test.accuracy * 100).toFixed(2)}%, ECE ${(result.test.ece * 100).toFixed(2)}%`);
      if (result.onnx !== undefined) console.log(`student.onnx matches the ${result.engine.name} engine (max |Δ| ${result.onnx.maxAbsDiff.toExponential(2)})`);
      console.log(`report: ${join(result.runDir, 'report.html')}`);
    });

  program
    .command('report')
    .description('one page comparing runs: their curves overlaid, a summary table and each recipe against the first')
    .argument('<runs...>', 'run directories (runs/<name>)')
    .requiredOption('--out <file>', 'the HTML page to write')
    .option('--title <title>', 'page title', 'Distillate runs compared')
    .action(async (runs: string[], f: { out: string; title: string }) => {
      const records = await Promise.all(runs.map((r) => readRun(r)));
      await writeFileAtomic(f.out, renderComparison(records, f.title));
      console.log(`${records.length} runs → ${f.out}`);
    });

  program
    .command('eval')
    .description('evaluate a trained student on a dataset')
    .requiredOption('--run <dir>', 'run directory (runs/<name>)')
    .requiredOption('--data <file>', 'dataset file')
    .addOption(new Option('--backend <name>', 'force a TF.js backend').choices(['tensorflow', 'webgpu', 'wasm', 'cpu']))
    .action(async (f: { run: string; data: string; backend?: BackendName }) => {
      const student = await runPredictor(f.run, f.backend);
      try {
        const data = await DatasetReader.open(f.data);
        const e = await evaluate(student.predict, { dataset: data, caches: [], rows: 0 }, { inputSize: data.inputSize, slots: [] });
        console.log(JSON.stringify({ rows: e.rows, accuracy: e.accuracy, ece: e.ece }));
      } finally {
        await student.release();
      }
    });

  program
    .command('generate')
    .description('continue a prompt with a causal language model (a trained student.onnx, or a teacher)')
    .requiredOption('--model <file>', 'the model (.onnx, with its .json sidecar)')
    .requiredOption('--prompt <text>', 'the text to continue')
    .option('--tokenizer <file>', 'a tokenizer.json (default: the one the sidecar names, beside the model)')
    .option('--max-tokens <n>', 'tokens to generate', (v: string) => Number.parseInt(v, 10), 48)
    .option('--temperature <t>', '0 for greedy', Number, 0)
    .option('--top-p <p>', 'nucleus sampling: keep the smallest set of tokens with this much mass', Number, 1)
    .option('--seed <n>', 'seed of the sampling', (v: string) => Number.parseInt(v, 10), 1)
    .action(async (f: { model: string; prompt: string; tokenizer?: string; maxTokens: number; temperature: number; topP: number; seed: number }) => {
      if (!(f.temperature >= 0) || !(f.topP > 0 && f.topP <= 1)) throw new Error('--temperature must be ≥ 0 and --top-p in (0, 1]');
      const r = await generate({ ...f, ...(f.tokenizer === undefined ? {} : { tokenizer: f.tokenizer }) });
      console.log(f.prompt + r.text);
    });

  program
    .command('export')
    .description('export a trained student to ONNX (a tfjs-engine run is converted and checked against TF.js; an ort-engine run already is ONNX)')
    .requiredOption('--run <dir>', 'run directory (runs/<name>)')
    .requiredOption('--data <file>', 'dataset to draw check samples from')
    .option('--out <file>', 'output path (default <run>/student.onnx)')
    .action(async (f: { run: string; data: string; out?: string }) => {
      const out = f.out ?? join(f.run, 'student.onnx');
      const student = await runPredictor(f.run);
      try {
        const data = await DatasetReader.open(f.data);
        if (student.kind === 'onnx') {
          if (resolve(out) !== resolve(join(f.run, 'student.onnx'))) await copyFile(join(f.run, 'student.onnx'), out);
          console.log(`${out} (the ort engine's trained graph, unchanged)`);
          return;
        }
        const model = await loadLayersModel(join(f.run, 'model'));
        const r = await exportAndCheck(exportOnnx(model, { classes: data.info.classes }), student.predict, out, data, 1e-4);
        model.dispose();
        console.log(`${r.path} (max |Δ| vs TF.js ${r.maxAbsDiff.toExponential(2)})`);
      } finally {
        await student.release();
      }
    });
  return program;
}

export function main(argv = process.argv): Promise<void> {
  return runCli(buildProgram(), argv);
}
