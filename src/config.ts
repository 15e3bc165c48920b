import path from 'node:path';
import { z } from 'zod';
import { AuthConfigError, loadAuthConfig, type AuthConfig } from './auth/auth-config';
import { PROJECT_ID_RE } from './auth/project-store';

/**
 * Typed, validated configuration. This is the only module that looks at the environment:
 * `loadConfig(process.env)` is called once by the CLI and the result is passed in everywhere.
 */

const booleanString = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

const byteSize = z
  .string()
  .regex(/^\d+(\.\d+)?\s*([kKmMgGtT][iI]?[bB]?)?$/, 'a byte size such as 4294967296, 512MB or 4GiB')
  .transform(parseByteSize);

/** PS3.5 6.2 AE: up to 16 characters of the default repertoire, no backslash, not all spaces. */
const AE_TITLE = /^(?=.*[^ ])[\x20-\x5b\x5d-\x7e]{1,16}$/;

/** One DIMSE peer allowed to associate (DIMSE_PEERS is a JSON array of these). */
export const DimsePeerSchema = z
  .object({
    aeTitle: z.string().trim().regex(AE_TITLE, 'an AE title: 1-16 characters, no backslash or control characters'),
    /** The peer's IP address; absent: any address. */
    host: z.string().min(1).optional(),
    /**
     * Projects the peer works within: what it stores is linked to them, and it queries and retrieves
     * their studies only. Absent or empty: none, and it may add to any study (as an admin's STOW)
     * and, when given `find`, `get` or `move`, query and retrieve every study.
     */
    projects: z.array(z.string().regex(PROJECT_ID_RE, 'a project id: 1-64 of letters, digits and ._-')).default([]),
    /** DIMSE services the peer may use (C-STORE, C-FIND, C-GET, C-MOVE); absent: store only. C-ECHO is always answered. */
    services: z.array(z.enum(['store', 'find', 'get', 'move'])).default(['store']),
    /** The port of the peer's own C-STORE SCP: with `host`, it makes the peer a C-MOVE destination. */
    port: z.number().int().min(1).max(65535).optional(),
    /** Whether associations this server opens to the peer use TLS; absent: as the listener does (DIMSE_TLS_CERT). */
    tls: z.boolean().optional(),
  })
  .strict();

/** A DIMSE service a peer may be allowed. */
export type DimseService = 'store' | 'find' | 'get' | 'move';

const EnvSchema = z.object({
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  HOST: z.string().min(1).default('127.0.0.1'),
  DATA_DIR: z.string().min(1).default('./data'),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'a postgres:// or postgresql:// URL')
    .optional(),
  DB_POOL_MAX: z.coerce.number().int().min(1).max(200).default(10),
  DB_POOL_IDLE_SECONDS: z.coerce.number().int().min(1).max(86_400).default(600),
  EMBEDDED_SHARED_BUFFERS_MB: z.coerce.number().int().min(16).max(1024).default(16),
  S3_BUCKET: z.string().min(3).optional(),
  S3_PREFIX: z.string().default(''),
  S3_ENDPOINT: z.string().url().optional(),
  S3_REGION: z.string().min(1).default('us-east-1'),
  S3_FORCE_PATH_STYLE: booleanString.default(false),
  MAX_REQUEST_BYTES: byteSize.prefault('4GiB'),
  MAX_HEADER_BYTES: byteSize.prefault('64MiB'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  PUBLIC_BASE_URL: z.string().url().optional(),
  ORPHAN_GRACE_SECONDS: z.coerce.number().int().min(0).default(3600),
  SWEEP_INTERVAL_SECONDS: z.coerce.number().int().min(0).default(600),
  MIGRATE_ON_START: booleanString.default(true),
  CORS_ORIGINS: z.string().default(''),
  ICD10CM_CODES_PATH: z.string().min(1).optional(),
  // Privacy (src/privacy): the HMAC key (never stored in the database), date shifts, burned-in annotation rule.
  PRIVACY_KEY: z.string().min(1).optional(),
  PRIVACY_KEY_FILE: z.string().min(1).optional(),
  DATE_SHIFT_MAX_DAYS: z.coerce.number().int().min(1).max(36500).default(365),
  DEID_WITHHOLD_MODALITIES: z.string().default('US,SC,OP'),
  MEMORY_RELEASE_SLACK: byteSize.prefault('16MiB'),
  QIDO_STUDY_CACHE_SIZE: byteSize.prefault('128MiB'),
  EXPORT_APPROVAL: z.enum(['researcher', 'none']).default('researcher'),
  // The audit trail's durable outbox (src/audit/audit-spool.ts): a directory, or `off`.
  AUDIT_SPOOL_DIR: z.string().min(1).optional(),
  AUDIT_SPOOL_SHIP_DELAY_MS: z.coerce.number().int().min(0).max(600_000).default(50),
  // DIMSE C-STORE SCP (src/dimse): off unless DIMSE_PORT is set.
  DIMSE_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  DIMSE_HOST: z.string().min(1).optional(),
  DIMSE_AE_TITLE: z.string().regex(AE_TITLE, 'an AE title: 1-16 characters, no backslash or control characters').default('IMAGING_LAKE'),
  DIMSE_PEERS: z.string().default('[]'),
  // DICOM TLS (PS3.15 B.9, BCP 195): PEM files of the listener's certificate and key; with a CA,
  // peers must present a certificate it signed, and called peers are checked against it.
  DIMSE_TLS_CERT: z.string().min(1).optional(),
  DIMSE_TLS_KEY: z.string().min(1).optional(),
  DIMSE_TLS_CA: z.string().min(1).optional(),
});

export interface AppConfig {
  port: number;
  host: string;
  dataDir: string;
  database: { kind: 'postgres'; url: string; poolMax: number; poolIdleSeconds: number } | { kind: 'embedded'; dir: string; sharedBuffersMb?: number };
  blobs:
    | { kind: 'fs'; root: string }
    | {
        kind: 's3';
        bucket: string;
        prefix: string;
        endpoint?: string;
        region: string;
        forcePathStyle: boolean;
        stagingDir: string;
      };
  /** Largest request body accepted (413 beyond). */
  maxRequestBytes: number;
  /** Largest DICOM header (bytes before Pixel Data) held in memory per instance. */
  maxHeaderBytes: number;
  logLevel: string;
  /** Base URL used in RetrieveURL and BulkDataURI when set; otherwise derived from the request. */
  publicBaseUrl?: string;
  /** Unreferenced blobs younger than this are never swept. */
  orphanGraceSeconds: number;
  /** 0 disables the periodic sweeper. */
  sweepIntervalSeconds: number;
  migrateOnStart: boolean;
  /** Origins allowed to call the API from a browser (CORS); empty = CORS off, `*` = any. */
  corsOrigins: string[];
  /** ICD-10-CM code list (one code a line, optionally gzip); unset = the list shipped in fhir-profiles/terminology. */
  icd10cmCodesPath?: string;
  /** Tokens, keys, SAML/OIDC sign-in and audit source (src/auth/auth-config.ts lists the AUTH_* variables). */
  auth: AuthConfig;
  /** Pseudonyms, date shifting and de-identification (src/privacy). */
  privacy: PrivacyConfig;
  /**
   * Heap growth past which `serve` runs a full collection when it goes idle or before a large
   * upload (src/memory-release.ts); 0 = leave it all to V8.
   */
  memoryReleaseSlackBytes: number;
  /**
   * Where AuditEvents are made durable before the answer and shipped to the database from
   * (src/audit/audit-spool.ts), when AUDIT_SPOOL_DIR names one; undefined (the default, or `off`):
   * each one is committed to the database before its answer (group commit).
   */
  auditSpoolDir?: string;
  /** How long an AuditEvent durable in the spool waits to ship, so that events ship in batches (ms). */
  auditSpoolShipDelayMs: number;
  /** Memory for study results kept between QIDO-RS requests (src/dicomweb/study-result-cache.ts); 0 = none kept. */
  qidoStudyCacheBytes: number;
  /**
   * Whose bulk exports wait for a principal investigator of their projects to approve them
   * (src/fhir/export/export-approvals.ts): researchers' (the default), or nobody's.
   */
  exportApproval?: 'researcher' | 'none';
  /** The DIMSE C-STORE SCP (src/dimse); undefined when DIMSE_PORT is unset. */
  dimse?: DimseConfig;
}

/** Where the DIMSE listener binds, its AE title, and who may associate with it (DIMSE_*). */
export interface DimseConfig {
  port: number;
  host: string;
  aeTitle: string;
  peers: DimsePeer[];
  /** TLS of the listener and of the associations it opens (PEM file paths); undefined: plain TCP. */
  tls?: DimseTlsFiles;
}

/** DIMSE_TLS_CERT, DIMSE_TLS_KEY and DIMSE_TLS_CA, resolved to absolute paths. */
export interface DimseTlsFiles {
  certFile: string;
  keyFile: string;
  /** Certificates of the CAs whose peers are trusted; set: peers must present a certificate (mutual TLS). */
  caFile?: string;
}

export type DimsePeer = z.infer<typeof DimsePeerSchema>;

/** The privacy section: where the HMAC key comes from and the de-identification rules (src/privacy). */
export interface PrivacyConfig {
  /** The key given in PRIVACY_KEY (hex or base64, at least 32 bytes); undefined = read `keyFile`. */
  key?: Buffer;
  /** PRIVACY_KEY_FILE, else DATA_DIR/keys/privacy.key (created with a random key, mode 0600, on first start). */
  keyFile: string;
  /** Whether `keyFile` was named explicitly (then it must exist: it is never generated). */
  keyFileGiven: boolean;
  /** Date offsets are drawn uniformly in [-max, +max] days, 0 excluded. */
  dateShiftMaxDays: number;
  /** Modalities whose instances are withheld from researchers unless BurnedInAnnotation is NO or a data manager cleared them. */
  withholdModalities: string[];
  /** SOP Class UID prefixes withheld the same way (Secondary Capture, 1.2.840.10008.5.1.4.1.1.7*). */
  withholdSopClassPrefixes: string[];
}

/** Thrown when the environment does not describe a valid configuration. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Parses and validates the environment into an AppConfig; throws ConfigError naming every bad variable. */
export function loadConfig(env: Record<string, string | undefined>): AppConfig {
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = EnvSchema.safeParse(cleaned);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new ConfigError(`invalid configuration: ${problems}`);
  }
  const e = parsed.data;
  const dataDir = path.resolve(e.DATA_DIR);
  const privacyKey = e.PRIVACY_KEY === undefined ? undefined : parsePrivacyKey(e.PRIVACY_KEY, 'PRIVACY_KEY');
  let auth: AuthConfig;
  try {
    auth = loadAuthConfig({ ...cleaned, DATA_DIR: dataDir });
  } catch (err) {
    if (err instanceof AuthConfigError) throw new ConfigError(`invalid configuration: ${err.message}`);
    throw err;
  }
  return {
    port: e.PORT,
    host: e.HOST,
    dataDir,
    database: e.DATABASE_URL
      ? { kind: 'postgres', url: e.DATABASE_URL, poolMax: e.DB_POOL_MAX, poolIdleSeconds: e.DB_POOL_IDLE_SECONDS }
      : { kind: 'embedded', dir: path.join(dataDir, 'pg'), sharedBuffersMb: e.EMBEDDED_SHARED_BUFFERS_MB },
    blobs: e.S3_BUCKET
      ? {
          kind: 's3',
          bucket: e.S3_BUCKET,
          prefix: e.S3_PREFIX,
          endpoint: e.S3_ENDPOINT,
          region: e.S3_REGION,
          forcePathStyle: e.S3_FORCE_PATH_STYLE,
          stagingDir: path.join(dataDir, 'staging'),
        }
      : { kind: 'fs', root: path.join(dataDir, 'store') },
    maxRequestBytes: e.MAX_REQUEST_BYTES,
    maxHeaderBytes: e.MAX_HEADER_BYTES,
    logLevel: e.LOG_LEVEL,
    publicBaseUrl: e.PUBLIC_BASE_URL?.replace(/\/+$/, ''),
    orphanGraceSeconds: e.ORPHAN_GRACE_SECONDS,
    sweepIntervalSeconds: e.SWEEP_INTERVAL_SECONDS,
    migrateOnStart: e.MIGRATE_ON_START,
    memoryReleaseSlackBytes: e.MEMORY_RELEASE_SLACK,
    qidoStudyCacheBytes: e.QIDO_STUDY_CACHE_SIZE,
    exportApproval: e.EXPORT_APPROVAL,
    auditSpoolDir: auditSpoolDirOf(e.AUDIT_SPOOL_DIR),
    auditSpoolShipDelayMs: e.AUDIT_SPOOL_SHIP_DELAY_MS,
    dimse: e.DIMSE_PORT === undefined ? undefined : { port: e.DIMSE_PORT, host: e.DIMSE_HOST ?? e.HOST, aeTitle: e.DIMSE_AE_TITLE.trim(), peers: parseDimsePeers(e.DIMSE_PEERS), tls: dimseTlsOf(e) },
    auth,
    icd10cmCodesPath: e.ICD10CM_CODES_PATH ? path.resolve(e.ICD10CM_CODES_PATH) : undefined,
    corsOrigins: e.CORS_ORIGINS.split(',').map((o) => o.trim().replace(/\/+$/, '')).filter(Boolean),
    privacy: {
      key: privacyKey,
      keyFile: path.resolve(e.PRIVACY_KEY_FILE ?? path.join(dataDir, 'keys', 'privacy.key')),
      keyFileGiven: e.PRIVACY_KEY_FILE !== undefined,
      dateShiftMaxDays: e.DATE_SHIFT_MAX_DAYS,
      withholdModalities: [...new Set(e.DEID_WITHHOLD_MODALITIES.split(',').map((m) => m.trim().toUpperCase()).filter(Boolean))],
      withholdSopClassPrefixes: ['1.2.840.10008.5.1.4.1.1.7'],
    },
  };
}

/** AUDIT_SPOOL_DIR as given; unset or `off`: none. */
function auditSpoolDirOf(given: string | undefined): string | undefined {
  if (given === undefined || ['off', 'none', 'false', '0'].includes(given.trim().toLowerCase())) return undefined;
  return path.resolve(given);
}

/**
 * Reads a privacy key written as hex or base64 (standard or URL-safe); at least 32 bytes
 * (HMAC-SHA-256 keys, RFC 2104 section 3: no shorter than the hash output).
 */
export function parsePrivacyKey(text: string, name = 'privacy key'): Buffer {
  const t = text.trim();
  let key: Buffer | undefined;
  if (/^[0-9a-fA-F]+$/.test(t) && t.length % 2 === 0) key = Buffer.from(t, 'hex');
  else if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(t)) key = Buffer.from(t.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  if (!key) throw new ConfigError(`invalid configuration: ${name}: not hex or base64`);
  if (key.length < 32) throw new ConfigError(`invalid configuration: ${name}: ${key.length} bytes, at least 32 needed`);
  return key;
}

/** DIMSE_TLS_*: a certificate and its key together, a CA only with them. */
function dimseTlsOf(e: { DIMSE_TLS_CERT?: string; DIMSE_TLS_KEY?: string; DIMSE_TLS_CA?: string }): DimseTlsFiles | undefined {
  if (!e.DIMSE_TLS_CERT && !e.DIMSE_TLS_KEY) {
    if (e.DIMSE_TLS_CA) throw new ConfigError('invalid configuration: DIMSE_TLS_CA: needs DIMSE_TLS_CERT and DIMSE_TLS_KEY (the listener\'s own certificate)');
    return undefined;
  }
  if (!e.DIMSE_TLS_CERT || !e.DIMSE_TLS_KEY) throw new ConfigError('invalid configuration: DIMSE_TLS_CERT and DIMSE_TLS_KEY: give both (PEM files of a certificate and its private key)');
  return { certFile: path.resolve(e.DIMSE_TLS_CERT), keyFile: path.resolve(e.DIMSE_TLS_KEY), caFile: e.DIMSE_TLS_CA ? path.resolve(e.DIMSE_TLS_CA) : undefined };
}

/** DIMSE_PEERS: a JSON array of `{ "aeTitle": "OCT_1", "host": "10.0.0.5", "projects": ["glaucoma"], "services": ["store"] }`. */
function parseDimsePeers(text: string): DimsePeer[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new ConfigError('invalid configuration: DIMSE_PEERS: not JSON (a list such as [{"aeTitle": "OCT_1", "projects": ["glaucoma"]}])');
  }
  const parsed = z.array(DimsePeerSchema).safeParse(json);
  if (!parsed.success) {
    throw new ConfigError(`invalid configuration: DIMSE_PEERS: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  }
  return parsed.data;
}

/** Parses `4294967296`, `512MB`, `4GiB` (binary multiples for both spellings). */
export function parseByteSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kKmMgGtT])?/.exec(text.trim());
  if (!m) throw new ConfigError(`not a byte size: ${text}`);
  const unit = (m[2] ?? '').toLowerCase();
  const power = { '': 0, k: 1, m: 2, g: 3, t: 4 }[unit] ?? 0;
  return Math.floor(Number(m[1]) * 1024 ** power);
}
