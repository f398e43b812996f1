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
