// Preloaded into a command whose peak RSS a bench measures (`node --import this-file …`): at exit,
// its VmHWM as the last stderr line. Plain JavaScript, so that the command runs as users run it
// (the built CLI under plain node, no tsx in the process).
import { readFileSync } from 'node:fs';
import process from 'node:process';

process.on('exit', () => {
  const kb = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
  process.stderr.write(`\npeak-rss-kb ${kb ?? 'unknown'}\n`);
});
