/** Console progress for a training run: a bar with ETA per epoch, and one summary line per epoch. */
import { Presets, SingleBar } from 'cli-progress';
import type { EpochMetrics } from './report.js';
import type { TrainOptions } from './train.js';

export function formatEpoch(m: EpochMetrics): string {
  const parts = [`epoch ${m.epoch}`, ...Object.entries(m.loss).map(([k, v]) => `${k} ${v.toFixed(4)}`)];
  if (m.trainAccuracy !== undefined) parts.push(`train ${(m.trainAccuracy * 100).toFixed(2)}%`);
  if (m.testAccuracy !== undefined) parts.push(`test ${(m.testAccuracy * 100).toFixed(2)}%`);
  if (m.agreement !== undefined) parts.push(`agreement ${(m.agreement * 100).toFixed(2)}%`);
  return parts.join(' · ');
}

/** Callbacks for `train()`; the bar draws only on a TTY, the epoch lines always go to `log`. */
export function progressCallbacks(label = '', log: (line: string) => void = console.log): Pick<TrainOptions, 'onEpochStart' | 'onBatch' | 'onEpochEnd'> {
  const prefix = label === '' ? '' : `${label} `;
  const bar = new SingleBar(
    {
      format: `${prefix}epoch {epoch}/{epochs} [{bar}] {percentage}% | {value}/{total} rows | {rate} rows/s | ETA {eta_formatted}`,
      hideCursor: true,
      etaBuffer: 200,
    },
    Presets.shades_classic,
  );
  let start = 0;
  return {
    onEpochStart: (epoch, epochs, rows) => {
      start = performance.now();
      bar.start(rows, 0, { epoch, epochs, rate: 0 });
    },
    onBatch: (done) => bar.update(done, { rate: Math.round(done / ((performance.now() - start) / 1000)) }),
    onEpochEnd: (m) => {
      bar.stop();
      log(prefix + formatEpoch(m));
    },
  };
}
