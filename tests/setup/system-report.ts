/** After the run: name the Debian packages whose tests were skipped, and how to get them. */
import { ALL_PACKAGES } from '../helpers/system.js';

export default function setup(): () => void {
  return () => {
    const missing = ALL_PACKAGES.filter((p) => !p.present()).map((p) => p.name);
    if (missing.length === 0) return;
    process.stdout.write(
      `\nSkipped: the tests that need ${missing.join(', ')}, which ${missing.length > 1 ? 'are' : 'is'} not installed. Run \`npm run setup\` (Debian; apt-get as root or with sudo), then npm test again.\n`,
    );
  };
}
