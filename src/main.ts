import { Command } from 'commander';
import { createApp, shutdownApp } from './app';
import { ConfigError, loadConfig, type AppConfig } from './config';
import { createDatabase } from './db/database';
import { runMigrations } from './db/migrate';
import { createLogger } from './logger';
import { mintLocalToken } from './auth/local-token';
import { registerClient } from './auth/client-registry';
import { rotateSigningKey } from './auth/signing-keys';
import { addProjectMember, createProject } from './auth/project-store';
import { isRole, ROLES, type Role } from './auth/roles';
import { assertSchemaCurrent } from './db/migrate';
import { createPrivacyService } from './privacy/privacy-service';
import { checkGenerateOptions, GenerateError, runGenerate, type GenerateOptions } from './generate/generate';
import { startMemoryRelease } from './memory-release';
import { createAppServer } from './http/app-server';
import { originOf } from './http/base-url';
import { startAppDimseListener } from './dimse/dimse-listener';
import fs from 'node:fs';
import path from 'node:path';

/** CLI entry: `imaging-lake serve | migrate | sweep`. */
export async function main(argv: string[], env: Record<string, string | undefined>): Promise<void> {
  const program = new Command();
  program.name('imaging-lake').description('Imaging research data server: DICOMweb, FHIR R4, pooled storage');

  program
    .command('serve')
    .description('start the HTTP server (migrates the schema first unless MIGRATE_ON_START=false)')
    .action(async () => {
      await serve(readConfig(env));
    });

  program
    .command('migrate')
    .description('bring the database schema to the latest version')
    .action(async () => {
      const config = readConfig(env);
      const logger = createLogger(config.logLevel);
      const db = createDatabase(config.database, logger);
      try {
        const applied = await runMigrations(db.knex);
        logger.info({ applied }, applied.length ? 'migrations applied' : 'schema already current');
      } finally {
        await db.close();
      }
    });

  program
    .command('sweep')
    .description('remove unreferenced blobs older than ORPHAN_GRACE_SECONDS')
    .option('--full', 'also list the whole blob store to find blobs the ledger never recorded')
    .action(async (opts: { full?: boolean }) => {
      const config = readConfig({ ...env, SWEEP_INTERVAL_SECONDS: '0' });
      const app = await createApp(config);
      try {
        const report = await app.sweeper.sweep({ full: opts.full });
        process.stdout.write(`${JSON.stringify(report)}\n`);
      } finally {
        await shutdownApp(app);
      }
    });

  program
    .command('token')
    .description('print a bearer token from the local issuer (the keys under DATA_DIR/keys, shared with the server)')
    .requiredOption('--role <role>', `one of ${ROLES.join(', ')}`)
    .option('--project <id...>', 'project(s) the token may see (repeat or space-separate)')
    .option('--scope <scopes>', 'SMART v2 scopes, narrowed to what the role may hold')
    .option('--subject <sub>', 'subject (default cli:<role>)')
    .option('--ttl <seconds>', 'lifetime in seconds', (v) => Number(v))
    .option('--json', 'print the whole token response as JSON')
    .action(async (opts: { role: string; project?: string[]; scope?: string; subject?: string; ttl?: number; json?: boolean }) => {
      const config = readConfig(withServedIssuer(env));
      const role = parseRole(opts.role);
      const token = await mintLocalToken(
        { role, projects: opts.project, scope: opts.scope, subject: opts.subject, ttlSeconds: opts.ttl },
        { config: config.auth },
      );
      process.stdout.write(opts.json ? `${JSON.stringify(token)}\n` : `${token.accessToken}\n`);
    });

  program
    .command('generate')
    .description('make a synthetic ophthalmology research population: DICOM (CT, MR, OPT, OP, OPV) and FHIR Patients + Conditions, as files and/or sent to a server')
    .option('--out <dir>', 'write DICOM files, FHIR transaction Bundles and summary.json under this directory')
    .option('--url <base>', 'send to a running server (e.g. http://localhost:8080): FHIR Bundles, then one STOW-RS request per visit')
    .option('--token <token>', 'bearer token for --url (default: IMAGING_LAKE_TOKEN, else an admin token from the local issuer under DATA_DIR)')
    .option('--patients <n>', 'patients', '10')
    .option('--studies <n>', 'mean imaging visits per patient', '3')
    .option('--modalities <list>', 'visit modalities to draw from', 'CT,MR,OPT,OP,OPV')
    .option('--pixels <preset>', 'small (tiny images, fast) or full (512x512 CT, 61 x 496 x 768 OCT volumes, 1536 x 1536 fundus photos)', 'small')
    .option('--seed <n>', 'same seed, same data (UIDs included)', '1')
    .option('--dates <range>', 'study dates YYYYMMDD-YYYYMMDD', '20150101-20251231')
    .option('--concurrency <n>', 'STOW-RS requests in flight with --url', '4')
    .option('--bundle-size <n>', 'patients per FHIR transaction Bundle', '50')
    .option('--no-dicom', 'FHIR only')
    .option('--no-fhir', 'DICOM only')
    .action(async (opts: Record<string, string | boolean | undefined>) => {
      const [from, to] = String(opts.dates).split('-');
      const options: GenerateOptions = {
        out: opts.out as string | undefined,
        url: opts.url as string | undefined,
        token: (opts.token as string | undefined) ?? env.IMAGING_LAKE_TOKEN,
        patients: Number(opts.patients),
        studiesPerPatient: Number(opts.studies),
        modalities: String(opts.modalities).split(',').map((m) => m.trim().toUpperCase()) as GenerateOptions['modalities'],
        pixels: opts.pixels as GenerateOptions['pixels'],
        seed: Number(opts.seed),
        from: from ?? '',
        to: to ?? '',
        concurrency: Number(opts.concurrency),
        bundleSize: Number(opts.bundleSize),
        dicom: opts.dicom !== false,
        fhir: opts.fhir !== false,
      };
      try {
        checkGenerateOptions(options);
      } catch (err) {
        if (!(err instanceof GenerateError)) throw err;
        process.stderr.write(`imaging-lake generate: ${err.message}\n`);
        process.exitCode = 2;
        return;
      }
      try {
        if (options.url && !options.token) {
          const config = readConfig(withServedIssuer(env));
          options.token = (await mintLocalToken({ role: 'admin', ttlSeconds: 3600, subject: 'cli:generate' }, { config: config.auth })).accessToken;
        }
        const summary = await runGenerate(options, (line) => process.stderr.write(`${line}\n`));
        process.stdout.write(`${JSON.stringify(summary)}\n`);
      } catch (err) {
        if (!(err instanceof GenerateError)) throw err;
        process.stderr.write(`imaging-lake generate: ${err.message}\n`);
        process.exitCode = 1;
      }
    });

  const client = program.command('client').description('SMART Backend Services client registrations');
  client
    .command('add')
    .description('register a client that authenticates with private_key_jwt')
    .requiredOption('--name <name>', 'display name')
    .requiredOption('--role <role>', `one of ${ROLES.join(', ')}`)
    .requiredOption('--scope <scopes...>', 'allowed SMART scopes, e.g. system/ImagingStudy.rs')
    .option('--jwks-file <file>', 'the client public keys (a JWKS JSON file)')
    .option('--jwks-uri <url>', 'where the client publishes its JWKS')
    .option('--project <id...>', 'projects the client may see')
    .option('--id <clientId>', 'client id (default: a random UUID)')
    .action(async (opts: { name: string; role: string; scope: string[]; jwksFile?: string; jwksUri?: string; project?: string[]; id?: string }) => {
      await withDatabase(env, async (knex) => {
        const registration = await registerClient(knex, {
          clientId: opts.id,
          name: opts.name,
          role: parseRole(opts.role),
          scopes: opts.scope.flatMap((s) => s.split(/\s+/)).filter(Boolean),
          jwks: opts.jwksFile ? JSON.parse(fs.readFileSync(opts.jwksFile, 'utf8')) : undefined,
          jwksUri: opts.jwksUri,
          projects: opts.project,
        });
        process.stdout.write(`${JSON.stringify(registration)}\n`);
      });
    });

  program
    .command('project')
    .description('projects group studies and resources for row-level access')
    .command('add <id>')
    .description('create (or rename) a project, optionally adding members')
    .option('--name <name>', 'display name')
    .option('--facility <facility>', 'facility the project belongs to')
    .option('--member <subject:role...>', 'members as subject:role')
    .action(async (id: string, opts: { name?: string; facility?: string; member?: string[] }) => {
      await withDatabase(env, async (knex) => {
        await createProject(knex, { id, name: opts.name ?? id, facility: opts.facility });
        for (const m of opts.member ?? []) {
          const at = m.lastIndexOf(':');
          await addProjectMember(knex, id, m.slice(0, at), parseRole(m.slice(at + 1)));
        }
        process.stdout.write(`${JSON.stringify({ id, name: opts.name ?? id })}\n`);
      });
    });

  program
    .command('privacy')
    .description('pseudonyms and de-identified UIDs (src/privacy)')
    .command('backfill')
    .description('give PatientKeys to patients without one and record the de-identified UIDs of every study linked to a project')
    .action(async () => {
      await withDatabase(env, async (knex) => {
        const report = await createPrivacyService(readConfig(env).privacy).backfill(knex);
        process.stdout.write(`${JSON.stringify(report)}\n`);
      });
    });

  program
    .command('keys')
    .description('token signing keys')
    .command('rotate')
    .description('make a new signing key current; the previous one stays published until its tokens expire')
    .action(async () => {
      const config = readConfig(env);
      process.stdout.write(`${JSON.stringify(await rotateSigningKey(config.auth))}\n`);
    });

  await program.parseAsync(argv);
}

/** Where `serve` records the issuer it runs under, so `token` mints for it without repeating PORT/HOST. */
function issuerFile(keyDir: string): string {
  return path.join(keyDir, 'issuer');
}

/**
 * The environment for minting: unless AUTH_ISSUER or PUBLIC_BASE_URL says otherwise, the issuer
 * recorded by the server that last ran on this DATA_DIR (its HOST:PORT may differ from the CLI's env).
 */
function withServedIssuer(env: Record<string, string | undefined>): Record<string, string | undefined> {
  if (env.AUTH_ISSUER || env.PUBLIC_BASE_URL) return env;
  try {
    const recorded = fs.readFileSync(issuerFile(readConfig(env).auth.keyDir), 'utf8').trim();
    return recorded ? { ...env, AUTH_ISSUER: recorded } : env;
  } catch {
    return env;
  }
}

function parseRole(value: string): Role {
  if (!isRole(value)) {
    process.stderr.write(`role must be one of ${ROLES.join(', ')}\n`);
    process.exit(2);
  }
  return value;
}

/** Opens the configured database (schema must be current), runs `work`, closes it. */
async function withDatabase(env: Record<string, string | undefined>, work: (knex: import('knex').Knex) => Promise<void>): Promise<void> {
  const config = readConfig(env);
  const db = createDatabase(config.database, createLogger('warn'));
  try {
    await assertSchemaCurrent(db.knex);
    await work(db.knex);
  } finally {
    await db.close();
  }
}

function readConfig(env: Record<string, string | undefined>): AppConfig {
  try {
    return loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

async function serve(config: AppConfig): Promise<void> {
  const app = await createApp(config);
  // Runs before express so that a large upload starts on a heap with its garbage collected.
  const memory = startMemoryRelease({ slackBytes: config.memoryReleaseSlackBytes, logger: app.logger });
  const server = createAppServer(app.express, (req, res) => {
    memory.onRequest(req, res);
    app.express(req, res);
  });
  // Large instances over slow links: no overall request deadline, but headers must arrive promptly.
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  app.logger.info({ host: config.host, port, database: app.db.kind, blobs: app.blobs.kind }, 'imaging-lake listening');
  // DIMSE listener beside the HTTP server (DIMSE_PORT): its stores take STOW-RS's path, its queries QIDO-RS's.
  const dimse = config.dimse
    ? await startAppDimseListener(app, config.dimse, `${config.publicBaseUrl ?? originOf(config.host, port)}/dicomweb`)
    : undefined;
  try {
    fs.mkdirSync(config.auth.keyDir, { recursive: true });
    fs.writeFileSync(issuerFile(config.auth.keyDir), `${config.auth.issuer}\n`);
  } catch (err) {
    app.logger.warn({ err }, 'could not record the token issuer for the CLI');
  }
  let closing = false;
  const stop = async (signal: string) => {
    if (closing) return;
    closing = true;
    app.logger.info({ signal, memoryRelease: memory.stats() }, 'shutting down');
    memory.stop();
    server.close();
    server.closeIdleConnections();
    setTimeout(() => server.closeAllConnections(), 10_000).unref();
    await dimse?.close().catch((err) => app.logger.error({ err }, 'DIMSE listener shutdown failed'));
    await shutdownApp(app).catch((err) => app.logger.error({ err }, 'shutdown failed'));
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('unhandledRejection', (reason) => app.logger.error({ err: reason }, 'unhandled rejection'));
}

if (require.main === module) {
  main(process.argv, process.env).catch((err) => {
    // Operator-facing errors (schema, configuration, lock) read best as one line.
    const known = ['SchemaVersionError', 'ConfigError', 'ClientRegistrationError'].includes(err?.name) || /in use by process/.test(err?.message);
    process.stderr.write(`imaging-lake: ${known ? err.message : (err?.stack ?? err)}\n`);
    process.exit(1);
  });
}
