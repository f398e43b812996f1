import type { Command } from 'commander';

/**
 * Run a commander program: errors become one line on stderr and exit code 1 (no stack trace,
 * which would bury the reason). DISTILLATE_DEBUG=1 prints the stack as well.
 */
export async function runMain(program: Command, argv = process.argv): Promise<void> {
  program.exitOverride();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    const e = err as Error & { code?: string; exitCode?: number };
    if (typeof e.code === 'string' && e.code.startsWith('commander.')) {
      // commander already printed its message (or help/version, which exit 0).
      process.exit(e.exitCode ?? 1);
    }
    console.error(`${program.name()}: ${e.message}`);
    if (process.env['DISTILLATE_DEBUG'] === '1') console.error(e.stack);
    process.exit(1);
  }
}
