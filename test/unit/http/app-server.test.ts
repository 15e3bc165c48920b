import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { createAppServer } from '../../../src/http/app-server';

/** Serves `app` through createAppServer, recording each request's prototype as express receives it; GETs `path` once. */
async function getThrough(app: express.Express, path: string): Promise<{ status: number; body: string; seen: { req: object | null; res: object | null } }> {
  const seen = { req: null as object | null, res: null as object | null };
  const server = createAppServer(app, (req: IncomingMessage, res: ServerResponse) => {
    seen.req = Object.getPrototypeOf(req);
    seen.res = Object.getPrototypeOf(res);
    app(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as AddressInfo;
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port, path }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        })
        .on('error', reject);
    });
    return { ...answer, seen };
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

describe('createAppServer', () => {
  it('creates requests and responses with the app prototypes, so express does not change them per request', async () => {
    const app = express();
    app.get('/x', (_req, res) => {
      res.json({ ok: true });
    });
    const { seen } = await getThrough(app, '/x');
    expect(seen.req).toBe(app.request);
    expect(seen.res).toBe(app.response);
  });

  it('serves the app as a plain http server would (express request and response helpers work)', async () => {
    const app = express();
    app.get('/items/:id', (req, res) => {
      res.status(201).json({ id: req.params.id, query: req.query.q, isRequest: req instanceof http.IncomingMessage, isResponse: res instanceof http.ServerResponse });
    });
    const { status, body } = await getThrough(app, '/items/42?q=a');
    expect(status).toBe(201);
    expect(JSON.parse(body)).toEqual({ id: '42', query: 'a', isRequest: true, isResponse: true });
  });

  it('refuses prototypes that are not requests and responses', () => {
    const app = express();
    (app as unknown as { request: object }).request = {};
    expect(() => createAppServer(app, () => undefined)).toThrow(TypeError);
  });
});
