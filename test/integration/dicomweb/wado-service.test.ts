import express, { type Express } from 'express';
import request from 'supertest';
import { createCorsMiddleware } from '../../../src/dicomweb/cors';
import { registerWadoRoutes } from '../../../src/dicomweb/wado-routes';
import { dicomwebErrorHandler } from '../../../src/dicomweb/routes';
import { createSyntheticInstance } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { startTestApp, type TestApp } from '../../helpers/test-app';

/** The DICOMweb router as the server composes it: CORS in front, STOW + WADO-RS routes, the error handler. */
function dicomwebApp(t: TestApp, origins: string[]): Express {
  const router = express.Router();
  router.post('/studies', (_req, res) => {
    res.status(200).end();
  });
  registerWadoRoutes(router, { db: t.app.db, blobs: t.app.blobs, logger: t.app.logger });
  router.use(dicomwebErrorHandler({ logger: t.app.logger }));
  const app = express();
  app.use('/dicomweb', createCorsMiddleware(origins), router);
  return app;
}

const errorText = (res: request.Response) => res.body['00000902']?.Value?.[0] as string;

describe('Retrieve Capabilities (PS3.18 8.9)', () => {
  let t: TestApp;
  let app: Express;
  beforeAll(async () => {
    t = await startTestApp();
    app = dicomwebApp(t, []);
  });
  afterAll(async () => {
    await t.close();
  });

  test('JSON lists the routed transactions with their media types', async () => {
    const res = await request(app).get('/dicomweb').set('Accept', 'application/json');
    expect(res.status).toBe(200);
    const names = res.body.resources.map((r: { transaction: string }) => r.transaction);
    expect(names).toEqual(expect.arrayContaining(['Retrieve Study', 'Retrieve Frames', 'Retrieve Bulkdata', 'Retrieve Instance Metadata', 'Store Instances']));
    const frames = res.body.resources.find((r: { transaction: string }) => r.transaction === 'Retrieve Frames');
    expect(frames.mediaTypes).toContain('multipart/related; type="image/jpeg"');
    expect(res.body.transferSyntaxes).toEqual(expect.arrayContaining([{ uid: '1.2.840.10008.1.2.4.201', name: expect.any(String), frameMediaType: 'image/jphc' }]));
  });

  test('lists nothing that is not routed', async () => {
    const res = await request(app).get('/dicomweb').set('Accept', 'application/json');
    const names = res.body.resources.map((r: { transaction: string }) => r.transaction);
    expect(names).not.toContain('Retrieve Rendered Instance');
    expect(names).not.toContain('Store Instances in Study');
    expect(names).not.toContain('Search for Studies');
    expect(res.body.queryKeys).toBeUndefined();
  });

  test('the default answer is WADL', async () => {
    const res = await request(app).get('/dicomweb');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/vnd\.sun\.wadl\+xml/);
    expect(res.text).toMatch(/<resource path="studies\/\{study\}\/series\/\{series\}\/instances\/\{instance\}\/frames\/\{frames\}">/);
  });

  test('OPTIONS on the service root answers the same description', async () => {
    const res = await request(app).options('/dicomweb').set('Accept', 'application/json');
    expect(res.status).toBe(200);
    expect(res.body.service).toBe('imaging-lake DICOMweb');
  });

  test('an unacceptable media type is 406 with a body', async () => {
    const res = await request(app).get('/dicomweb').set('Accept', 'text/html');
    expect(res.status).toBe(406);
    expect(errorText(res)).toMatch(/application\/vnd\.sun\.wadl\+xml or application\/json/);
  });
});

describe('CORS for browser viewers', () => {
  let t: TestApp;
  const viewer = 'https://viewer.example.org';
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  test('a preflight from an allowed origin is 204 with the methods and headers a viewer needs', async () => {
    const res = await request(dicomwebApp(t, [viewer]))
      .options('/dicomweb/studies/1.2.3/metadata')
      .set('Origin', viewer)
      .set('Access-Control-Request-Method', 'GET')
      .set('Access-Control-Request-Headers', 'authorization, accept');
    expect(res.status).toBe(204);
    expect(res.headers['access-control-allow-origin']).toBe(viewer);
    expect(res.headers['access-control-allow-methods']).toMatch(/GET.*DELETE/);
    expect(res.headers['access-control-allow-headers']).toMatch(/Authorization, Accept, Content-Type/);
    expect(res.headers.vary).toMatch(/Origin/);
  });

  test('a preflight allows the conditional and preference headers FHIR apps send, and ETag is exposed', async () => {
    const res = await request(dicomwebApp(t, [viewer]))
      .options('/dicomweb/studies')
      .set('Origin', viewer)
      .set('Access-Control-Request-Method', 'PUT')
      .set('Access-Control-Request-Headers', 'if-match, if-none-exist, prefer');
    expect(res.status).toBe(204);
    const allowed = String(res.headers['access-control-allow-headers']).toLowerCase().split(/,\s*/);
    expect(allowed).toEqual(expect.arrayContaining(['if-match', 'if-none-exist', 'prefer']));
    const simple = await request(dicomwebApp(t, [viewer])).get('/dicomweb').set('Origin', viewer);
    expect(String(simple.headers['access-control-expose-headers'])).toMatch(/\bETag\b/);
  });

  test('a preflight from another origin is 403 with a body naming it', async () => {
    const res = await request(dicomwebApp(t, [viewer]))
      .options('/dicomweb/studies')
      .set('Origin', 'https://evil.example')
      .set('Access-Control-Request-Method', 'POST');
    expect(res.status).toBe(403);
    expect(res.headers['access-control-allow-origin']).toBeUndefined();
    expect(res.body.error).toMatch(/origin https:\/\/evil\.example is not allowed/);
  });

  test('an allowed origin may read Content-Range, Warning and Content-Length', async () => {
    const inst = createSyntheticInstance({ rows: 8, columns: 8 });
    const { body, contentType } = buildMultipart([inst.bytes]);
    await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).send(body);
    const res = await request(dicomwebApp(t, [viewer])).get(`/dicomweb/studies/${inst.studyInstanceUID}/metadata`).set('Origin', viewer);
    expect(res.status).toBe(200);
    expect(res.headers['access-control-allow-origin']).toBe(viewer);
    const exposed = String(res.headers['access-control-expose-headers']).split(/,\s*/);
    expect(exposed).toEqual(expect.arrayContaining(['Content-Range', 'Warning', 'Content-Length']));
  });

  test('CORS is off by default: no CORS headers at all', async () => {
    const res = await request(dicomwebApp(t, [])).get('/dicomweb').set('Origin', viewer);
    expect(res.headers['access-control-allow-origin']).toBeUndefined();
  });

  test('a wildcard entry allows any origin', async () => {
    const res = await request(dicomwebApp(t, ['*'])).options('/dicomweb').set('Origin', 'https://any.example').set('Access-Control-Request-Method', 'GET');
    expect(res.status).toBe(204);
    expect(res.headers['access-control-allow-origin']).toBe('*');
  });
});
