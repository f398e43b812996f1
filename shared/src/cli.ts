/** The part of a commander program that `runCli` needs (shared stays free of a commander dependency). */
export interface CliProgram {
  name(): string;
  exitOverride(): unknown;
  parseAsync(argv: readonly string[]): Promise<unknown>;
}

/**
 * Run a CLI program: any error becomes one line on stderr, `<program>: <reason>`, and exit code
 * 1 (no stack trace burying the reason; DISTILLATE_DEBUG=1 adds it). commander's own messages
 * (usage errors, --help, --version) keep commander's exit codes.
 */
export async function runCli(program: CliProgram, argv: readonly string[] = process.argv, describe: (err: Error) => string = (e) => e.message): Promise<void> {
  program.exitOverride();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    const e = err as Error & { code?: string; exitCode?: number };
    if (typeof e.code === 'string' && e.code.startsWith('commander.')) process.exit(e.exitCode ?? 1);
    console.error(`${program.name()}: ${describe(e)}`);
    if (process.env['DISTILLATE_DEBUG'] === '1') console.error(e.stack);
    process.exit(1);
  }
}

/** Edit distance (insertions, deletions, substitutions) between two names. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/** The `n` candidates closest to an unknown `name` (by edit distance), for a one-line refusal. */
export function closestNames(name: string, candidates: readonly string[], n = 3): string[] {
  return [...candidates].sort((a, b) => editDistance(name, a) - editDistance(name, b)).slice(0, n);
}
