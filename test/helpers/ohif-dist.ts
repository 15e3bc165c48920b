import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

/**
 * The OHIF Viewer's production build (`dist/` of the `@ohif/app` npm package), fetched once with
 * `npm pack` into node_modules/.cache and reused. It is not a dependency of the project: its
 * dependency tree is huge and only the built static files are needed.
 */

const run = promisify(execFile);

export const OHIF_VERSION = '3.13.2';
const CACHE_ROOT = path.resolve(__dirname, '../../node_modules/.cache/imaging-lake-ohif');
const LOCK_STALE_MS = 10 * 60_000;

/** Directory of OHIF's built files (index.html, app-config.js, bundles), fetching it first if needed. */
export async function ensureOhifDist(version = OHIF_VERSION): Promise<string> {
  const target = path.join(CACHE_ROOT, version);
  const dist = path.join(target, 'dist');
  const done = path.join(target, '.complete');
  if (fs.existsSync(done)) return dist;
  await fs.promises.mkdir(CACHE_ROOT, { recursive: true });
  const release = await acquireLock(path.join(CACHE_ROOT, `${version}.lock`));
  try {
    if (fs.existsSync(done)) return dist; // another worker fetched it while we waited
    const work = await fs.promises.mkdtemp(path.join(CACHE_ROOT, `${version}.tmp-`));
    try {
      await run('npm', ['pack', `@ohif/app@${version}`, '--pack-destination', work, '--silent', '--no-fund', '--no-audit'], {
        cwd: work,
        timeout: 10 * 60_000,
        maxBuffer: 16 * 1024 * 1024,
      });
      const tarball = (await fs.promises.readdir(work)).find((f) => f.endsWith('.tgz'));
      if (!tarball) throw new Error(`npm pack @ohif/app@${version} left no tarball in ${work}`);
      await run('tar', ['-xzf', path.join(work, tarball), '-C', work], { timeout: 5 * 60_000 });
      if (!fs.existsSync(path.join(work, 'package/dist/index.html'))) throw new Error(`@ohif/app@${version} has no dist/index.html`);
      await fs.promises.rm(target, { recursive: true, force: true });
      await fs.promises.rename(path.join(work, 'package'), target);
      await fs.promises.writeFile(done, new Date().toISOString());
    } finally {
      await fs.promises.rm(work, { recursive: true, force: true });
    }
    return dist;
  } finally {
    await release();
  }
}

/** A directory lock (mkdir is atomic); a lock older than LOCK_STALE_MS is taken over. */
async function acquireLock(lockDir: string): Promise<() => Promise<void>> {
  const deadline = Date.now() + LOCK_STALE_MS + 60_000;
  for (;;) {
    try {
      await fs.promises.mkdir(lockDir);
      return () => fs.promises.rm(lockDir, { recursive: true, force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const age = Date.now() - (await fs.promises.stat(lockDir).then((s) => s.mtimeMs, () => Date.now()));
      if (age > LOCK_STALE_MS) await fs.promises.rm(lockDir, { recursive: true, force: true });
      else if (Date.now() > deadline) throw new Error(`timed out waiting for ${lockDir}`);
      else await new Promise((r) => setTimeout(r, 500));
    }
  }
}

/**
 * OHIF's app-config.js for a DICOMweb server: the data source is the one documented in
 * dicomweb/ohif-data-source.json with its roots pointed at `dicomwebRoot`; no study-list
 * dialogs, no service worker.
 *
 * Bearer tokens: OHIF puts whatever its `userAuthenticationService.getAuthorizationHeader()`
 * returns on every DICOMweb request (QIDO and WADO clients, the image loader's XHRs). Its viewer
 * route fills that from a `?token=` URL parameter (OHIF docs, deployment/authorization, "Token
 * based authentication in URL"; routes/Mode/updateAuthServiceAndCleanUrl), but the study list
 * route does not. So the config is given in its function form (appInit calls
 * `window.config({ servicesManager })`) and the data source's `onConfiguration` hook, which runs
 * on every route before the first query, does the same for the study list: `/?token=...`.
 * A deployment would use OHIF's `oidc` settings against its identity provider instead.
 */
export function buildOhifAppConfig(dataSource: Record<string, unknown>, dicomwebRoot: string): string {
  const source = JSON.parse(JSON.stringify(dataSource)) as { configuration: Record<string, unknown>; sourceName: string; $comment?: string };
  delete source.$comment;
  // wadoUriRoot is the WADO-URI endpoint itself: OHIF appends `?requestType=WADO&studyUID=...`.
  Object.assign(source.configuration, { qidoRoot: dicomwebRoot, wadoRoot: dicomwebRoot, wadoUriRoot: `${dicomwebRoot}/wado` });
  const config = {
    routerBasename: null,
    extensions: [],
    modes: [],
    customizationService: {},
    showStudyList: true,
    maxNumberOfWebWorkers: 2,
    showWarningMessageForCrossOrigin: false,
    showCPUFallbackMessage: false,
    showLoadingIndicator: true,
    investigationalUseDialog: { option: 'never' },
    maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 10 },
    showErrorDetails: 'always',
    defaultDataSourceName: source.sourceName,
    dataSources: [source],
  };
  return `/** Generated by test/helpers/ohif-dist.ts for an imaging-lake e2e run. */
window.config = function imagingLakeConfig({ servicesManager }) {
  const config = ${JSON.stringify(config, null, 2).replace(/\n/g, '\n  ')};
  // ?token=<bearer token> on any route, as OHIF's viewer route already honours it.
  config.dataSources[0].configuration.onConfiguration = (dicomWebConfig, { query }) => {
    const token = query && typeof query.get === 'function' ? query.get('token') : null;
    if (token) {
      servicesManager.services.userAuthenticationService.setServiceImplementation({
        getAuthorizationHeader: () => ({ Authorization: 'Bearer ' + token }),
      });
    }
    return dicomWebConfig;
  };
  return config;
};
`;
}
