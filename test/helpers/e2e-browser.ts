import fs from 'node:fs';
import type { Browser, BrowserContext, Page, Request, Response } from 'playwright-core';
import { chromium } from 'playwright-core';

/**
 * Headless Chromium for the end-to-end tests: Debian's `chromium` package (CI installs it with
 * apt), driven by playwright-core, which downloads no browser of its own.
 */

const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome', '/usr/bin/google-chrome-stable'];

/**
 * Flags that work on a machine without a GPU: WebGL 2 comes from ANGLE over SwiftShader (the
 * viewer's cornerstone renderer needs it). Chromium only falls back to SwiftShader silently in
 * older versions, so the unsafe flag is explicit.
 */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--use-angle=swiftshader',
  '--enable-unsafe-swiftshader',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

/** Where Chromium is, or why the suite cannot run: CHROMIUM_PATH wins over the usual places. */
export function locateChromium(): { path: string } | { missing: string } {
  const given = process.env.CHROMIUM_PATH;
  if (given) return fs.existsSync(given) ? { path: given } : { missing: `CHROMIUM_PATH=${given} does not exist` };
  const found = CANDIDATES.find((p) => fs.existsSync(p));
  return found ? { path: found } : { missing: `no Chromium at ${CANDIDATES.join(', ')} (apt-get install chromium, or set CHROMIUM_PATH)` };
}

/**
 * The executable the e2e suites use, or null (with the reason printed) when it is missing on a
 * developer machine. Under CI=true a missing Chromium throws: the suite fails, it never skips.
 */
export function chromiumForSuite(suite: string): string | null {
  const where = locateChromium();
  if ('path' in where) return where.path;
  if (process.env.CI === 'true') throw new Error(`${suite}: Chromium is required under CI: ${where.missing}`);
  console.warn(`${suite} skipped: ${where.missing}`);
  return null;
}

/** Launches headless Chromium with the WebGL-capable flags. */
export async function launchChromium(executablePath: string): Promise<Browser> {
  return chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS, timeout: 60_000 });
}

/** A browser context without service workers (OHIF registers one; it would hide requests from us). */
export async function newIsolatedContext(browser: Browser, viewport = { width: 1400, height: 900 }): Promise<BrowserContext> {
  return browser.newContext({ viewport, serviceWorkers: 'block', deviceScaleFactor: 1 });
}

/** One request to the server under test that did not succeed, as the browser saw it. */
export interface TrafficProblem {
  method: string;
  url: string;
  /** HTTP status, or 0 when the request failed without an answer (CORS, reset, abort). */
  status: number;
  detail: string;
  requestHeaders: Record<string, string>;
}

/** Everything the page asked of a URL prefix: every request, and those that failed. */
export interface TrafficLog {
  requests: Array<{ method: string; url: string; status?: number; contentType?: string; accept?: string }>;
  problems: TrafficProblem[];
  /** Image requests the viewer itself cancelled (net::ERR_ABORTED), which are no server fault. */
  cancelled: string[];
  /** Waits until answers being read (bodies of failed ones) are in. */
  settle(): Promise<void>;
}

/**
 * Records the page's requests under `prefix` (e.g. `http://127.0.0.1:1234/dicomweb`): any
 * 'requestfailed' (network error, CORS refusal, abort) and any answer with status >= 400, with
 * the start of its body, so a failure report names the request and what the server said.
 */
export function watchTraffic(page: Page, prefix: string): TrafficLog {
  const log: TrafficLog & { pending: Array<Promise<void>> } = {
    requests: [],
    problems: [],
    cancelled: [],
    pending: [],
    async settle() {
      await Promise.allSettled(this.pending);
    },
  };
  const entries = new Map<Request, TrafficLog['requests'][number]>();
  page.on('request', (req) => {
    if (!req.url().startsWith(prefix)) return;
    const entry = { method: req.method(), url: req.url(), accept: req.headers()['accept'] };
    entries.set(req, entry);
    log.requests.push(entry);
  });
  page.on('response', (res: Response) => {
    const req = res.request();
    const entry = entries.get(req);
    if (!entry) return;
    entry.status = res.status();
    entry.contentType = res.headers()['content-type'];
    if (res.status() < 400) return;
    log.pending.push(
      res
        .text()
        .catch(() => '(body unavailable)')
        .then((body) => {
          log.problems.push({ method: req.method(), url: req.url(), status: res.status(), detail: body.slice(0, 500), requestHeaders: req.headers() });
        }),
    );
  });
  page.on('requestfailed', (req) => {
    if (!entries.has(req)) return;
    const failure = req.failure()?.errorText ?? 'failed';
    // Cornerstone cancels image requests it no longer needs (another study opened): not a server fault.
    if (/ERR_ABORTED/.test(failure) && req.method() === 'GET' && /\/frames\/|\/thumbnail|\/rendered|\/wado\?/.test(req.url())) {
      log.cancelled.push(req.url());
      return;
    }
    log.problems.push({ method: req.method(), url: req.url(), status: 0, detail: failure, requestHeaders: req.headers() });
  });
  // A request refused at its preflight is never sent, so no request event names it: the
  // console message is the only trace.
  page.on('console', (msg) => {
    const text = msg.text();
    const url = /^Access to \w+ at '([^']+)' from origin '[^']+' has been blocked by CORS policy/.exec(text)?.[1];
    if (msg.type() === 'error' && url?.startsWith(prefix)) log.problems.push({ method: '(CORS)', url, status: 0, detail: text, requestHeaders: {} });
  });
  return log;
}

/** A readable list of traffic problems for an assertion message. */
export function describeProblems(problems: TrafficProblem[]): string {
  return problems
    .map((p) => `${p.method} ${p.url} -> ${p.status || 'no answer'}: ${p.detail}\n    request headers: ${JSON.stringify(p.requestHeaders)}`)
    .join('\n');
}
