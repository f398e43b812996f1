/**
 * Debian's Chromium (CHROMIUM), driven by playwright-core, which downloads no browser. Pages are
 * screenshotted into test-output/ (screenshots of failures, and the README's pictures).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { CHROMIUM } from './system.js';
import { REPO } from './cli.js';

export const TEST_OUTPUT = join(REPO, 'test-output');

export function launchChromium(): Promise<Browser> {
  // --no-sandbox: CI runs the tests as root, where Chromium's sandbox refuses to start.
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
}

/** Run `check` on the page; screenshot it to test-output/<name>.png, whether the check passes or fails. */
export async function withScreenshot(page: Page, name: string, check: () => Promise<void>): Promise<void> {
  mkdirSync(TEST_OUTPUT, { recursive: true });
  try {
    await check();
  } finally {
    await page.screenshot({ path: join(TEST_OUTPUT, `${name}.png`), fullPage: true });
  }
}
