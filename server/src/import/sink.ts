/**
 * Where every importer's rows go (image folders, tables): one dataset file written atomically,
 * with a `source` per row, and the bad-input policy: a row that cannot be imported is skipped
 * with its reason (or stops the import, `onError: 'fail'`), more skipped than `maxSkipped` of
 * the total fails the import, and a failed import leaves no dataset, only its report.
 */
import { DatasetWriter, writeFileAtomic, type DatasetInfo } from '@distillate/shared';
import { basename, dirname, join } from 'node:path';

export class ImportError extends Error {
  override readonly name = 'ImportError';
}

export interface SkippedFile {
  /** The file, or the table row, that was skipped. */
  readonly source: string;
  readonly reason: string;
}

/** `data/x.arrow` → `data/x.import-report.json`. */
export function reportPath(out: string): string {
  return join(dirname(out), `${basename(out).replace(/\.arrow$/, '')}.import-report.json`);
}

export class ImportSink {
  readonly skipped: SkippedFile[] = [];
  readonly perClass = new Map<string, number>();
  readonly #o: { readonly out: string; readonly onError: 'skip' | 'fail'; readonly maxSkipped: number; readonly unit: string };
  #writer: DatasetWriter | undefined;
  #imported = 0;

  /** `unit`: what is counted, in the messages ("image files", "rows"). */
  constructor(o: { readonly out: string; readonly onError: 'skip' | 'fail'; readonly maxSkipped: number; readonly unit: string }) {
    this.#o = o;
  }

  get imported(): number {
    return this.#imported;
  }

  /** A row that cannot be imported: recorded, or (onError: 'fail') the end of the import. */
  skip(source: string, reason: string): void {
    if (this.#o.onError === 'fail') throw new ImportError(`${source}: ${reason}`);
    this.skipped.push({ source, reason });
  }

  /** Rows in order; the first call fixes the dataset's description. */
  async append(
    info: DatasetInfo,
    rows: { readonly inputs: Float32Array | Uint8Array; readonly labels: Int32Array; readonly sources: readonly string[] },
  ): Promise<void> {
    const n = rows.sources.length;
    if (n === 0) return;
    this.#writer ??= DatasetWriter.create(this.#o.out, info, { source: true });
    await this.#writer.append({
      ids: Int32Array.from({ length: n }, (_, i) => this.#imported + i),
      inputs: rows.inputs,
      labels: rows.labels,
      sources: rows.sources,
    });
    for (const y of rows.labels) if (y >= 0) this.perClass.set(info.classes[y]!, (this.perClass.get(info.classes[y]!) ?? 0) + 1);
    this.#imported += n;
  }

  /**
   * Close the dataset and write the report (`extra` plus the counts), or fail the import when
   * nothing was imported or too much was skipped.
   */
  async finish<R extends object>(
    total: number,
    extra: R,
  ): Promise<R & { imported: number; skipped: readonly SkippedFile[]; perClass: Record<string, number>; fingerprint: string }> {
    if (this.#writer === undefined) {
      const first = this.skipped[0];
      throw new ImportError(`none of the ${total} ${this.#o.unit} could be imported${first === undefined ? '' : ` (first: ${first.source}: ${first.reason})`}`);
    }
    const fraction = this.skipped.length / total;
    if (fraction > this.#o.maxSkipped) {
      throw new ImportError(
        `skipped ${this.skipped.length} of ${total} ${this.#o.unit} (${(fraction * 100).toFixed(1)} %), over --max-skipped ${(this.#o.maxSkipped * 100).toFixed(1)} %; first: ${this.skipped[0]!.source}: ${this.skipped[0]!.reason}`,
      );
    }
    const written = await this.#writer.close();
    const report = { ...extra, imported: this.#imported, skipped: this.skipped, perClass: Object.fromEntries(this.perClass), fingerprint: written.fingerprint };
    await writeFileAtomic(reportPath(this.#o.out), JSON.stringify(report, null, 2));
    return report;
  }

  /** A failed import: no dataset; the report says why and which rows were skipped. */
  async fail(err: unknown, extra: object): Promise<void> {
    await this.#writer?.abort();
    if (!(err instanceof ImportError)) return;
    await writeFileAtomic(reportPath(this.#o.out), JSON.stringify({ ...extra, failed: err.message, skipped: this.skipped }, null, 2)).catch(() => undefined);
  }
}
