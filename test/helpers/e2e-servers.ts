import express from 'express';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { buildMultipart } from './multipart-body';
import { startTestApp, type TestApp } from './test-app';

/**
 * The two origins of a browser test: imaging-lake itself (in process, on a real port) and a
 * static site on another port that serves the client (OHIF, or a page with dicomweb-client).
 * They are different origins on purpose, so every request crosses CORS as it does for users.
 */

/** An HTTP server on 127.0.0.1 with a random port. */
export interface RunningServer {
  origin: string;
  close(): Promise<void>;
}

async function listen(handler: http.RequestListener): Promise<{ server: http.Server; origin: string }> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return { server, origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

function closeServer(server: http.Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

/** What a static site serves: fixed answers first, then directories, then (optionally) the SPA page. */
export interface StaticSiteOptions {
  /** Exact paths answered with a body (or a function giving it, when known only later) or a file. */
  routes?: Record<string, { body: string | Buffer | (() => string | Buffer); type: string } | { file: string }>;
  /** Directories mounted at URL prefixes. */
  mounts?: Array<{ at: string; dir: string }>;
  /** File sent for any other GET that accepts HTML (single-page app routes such as /viewer). */
  spaIndex?: string;
}

/** Starts a static file server for the browser side of a test. */
export async function startStaticSite(options: StaticSiteOptions): Promise<RunningServer> {
  const app = express();
  app.disable('x-powered-by');
  for (const [route, answer] of Object.entries(options.routes ?? {})) {
    app.get(route, (_req, res) => {
      res.setHeader('Cache-Control', 'no-store');
      if ('file' in answer) res.sendFile(answer.file, { dotfiles: 'allow' });
      else res.type(answer.type).send(typeof answer.body === 'function' ? answer.body() : answer.body);
    });
  }
  for (const mount of options.mounts ?? []) app.use(mount.at, express.static(mount.dir, { fallthrough: true, index: ['index.html'] }));
  if (options.spaIndex) {
    const index = options.spaIndex;
    app.use((req, res, next) => {
      if (req.method !== 'GET' || !req.accepts('html') || path.extname(req.path) !== '') return next();
      res.sendFile(index, { dotfiles: 'allow' });
    });
  }
  app.use((req, res) => {
    res.status(404).type('text/plain').send(`not found: ${req.path}`);
  });
  const { server, origin } = await listen(app);
  return { origin, close: () => closeServer(server) };
}

/** imaging-lake on a real port, allowing one browser origin through CORS. */
export interface DicomwebServer extends RunningServer {
  /** `<origin>/dicomweb`, the root that clients are configured with. */
  dicomwebRoot: string;
  testApp: TestApp;
  /** Mints a bearer token the server accepts (the browser sends it as `Authorization: Bearer`). */
  token: TestApp['token'];
}

/**
 * Starts the composed server (same createApp as production, on the suite's database and blob
 * store) on a random port, with CORS_ORIGINS set to the client's origin.
 */
export async function startDicomwebServer(corsOrigin: string, env: Record<string, string> = {}): Promise<DicomwebServer> {
  const testApp = await startTestApp({ CORS_ORIGINS: corsOrigin, ...env });
  try {
    const { server, origin } = await listen(testApp.app.express);
    return {
      origin,
      dicomwebRoot: `${origin}/dicomweb`,
      testApp,
      token: testApp.token,
      async close() {
        await closeServer(server);
        await testApp.close();
      },
    };
  } catch (err) {
    await testApp.close();
    throw err;
  }
}

/** Who stores: a bearer token, and the project the studies go into (X-Project) when the token has several. */
export interface StoreAs {
  token: string;
  project?: string;
}

/** Stores files with one STOW-RS request from Node (set-up for tests that exercise reading). */
export async function storeFiles(dicomwebRoot: string, files: string[], as: StoreAs): Promise<Record<string, unknown>> {
  const { body, contentType } = buildMultipart(files.map((f) => fs.readFileSync(f)));
  const headers: Record<string, string> = { 'Content-Type': contentType, Accept: 'application/dicom+json', Authorization: `Bearer ${as.token}` };
  if (as.project) headers['X-Project'] = as.project;
  const res = await fetch(`${dicomwebRoot}/studies`, { method: 'POST', headers, body });
  const answer = (await res.json()) as Record<string, unknown>;
  if (res.status !== 200) throw new Error(`STOW answered ${res.status}: ${JSON.stringify(answer).slice(0, 500)}`);
  return answer;
}

/** The .dcm files of a directory, sorted by name. */
export function dicomFilesIn(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.dcm'))
    .sort()
    .map((f) => path.join(dir, f));
}
