/**
 * The server's token signing keys, kept as private JWK files under DATA_DIR/keys (mode 0600).
 * Files rather than a table so that a separate CLI process (`imaging-lake token`) can mint
 * tokens the running server accepts even on the single-process embedded database, and so that
 * private keys stay out of database dumps. The newest key signs; older keys stay published at
 * /oauth2/jwks until every token they signed has expired, then they are deleted.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type JWK, type KeyLike } from 'jose';
import type { AuthConfig } from './auth-config';

/** One signing key. */
export interface SigningKey {
  readonly kid: string;
  readonly alg: 'ES256' | 'RS256';
  readonly createdAt: number;
  readonly privateKey: KeyLike;
  readonly publicKey: KeyLike;
  readonly publicJwk: JWK;
}

/** The set of keys: the current one signs, all of them verify. */
export interface KeyStore {
  /** The newest key (re-reads the directory at most once a minute to pick up rotations). */
  current(): Promise<SigningKey>;
  /** The key with this kid; re-reads the directory (throttled) when it is not known yet. */
  find(kid: string): Promise<SigningKey | undefined>;
  /** Every published key, newest first, as a public JWK Set (RFC 7517 5). */
  publicJwks(): Promise<{ keys: JWK[] }>;
  /** Creates a new current key; the previous one remains published until its tokens expire. */
  rotate(): Promise<SigningKey>;
  /**
   * A number that changes whenever the set of keys changes (a rotation, a key pruned or removed
   * from the directory): caches of verified tokens compare it and verify again after a change.
   */
  revision(): number;
}

type KeyStoreConfig = Pick<AuthConfig, 'keyDir' | 'signingAlg' | 'localTokenMaxTtlSeconds' | 'clockToleranceSeconds'>;

interface KeyFile {
  kid: string;
  alg: 'ES256' | 'RS256';
  createdAt: string;
  privateJwk: JWK;
}

const RESCAN_MS = 60_000;
const MISS_RESCAN_MS = 2_000;

/** Opens (creating when empty) the key directory and loads every key in it. */
export async function openKeyStore(config: KeyStoreConfig): Promise<KeyStore> {
  await fs.mkdir(config.keyDir, { recursive: true, mode: 0o700 });
  let keys: SigningKey[] = [];
  let scannedAt = 0;
  let revision = 0;
  let background: Promise<void> | undefined;
  const byKid = new Map<string, SigningKey>();

  const scan = async () => {
    const loaded = await loadKeys(config.keyDir);
    const next = await pruneRetired(config, loaded);
    const changed = next.length !== keys.length || next.some((k, i) => k.kid !== keys[i].kid);
    keys = next;
    byKid.clear();
    for (const k of keys) byKid.set(k.kid, k);
    scannedAt = Date.now();
    if (changed) revision++;
  };
  /** Re-reads a stale directory without making the caller wait (a removed key stops verifying within a minute). */
  const refreshInBackground = () => {
    if (background || Date.now() - scannedAt <= RESCAN_MS) return;
    background = scan()
      .catch(() => undefined)
      .finally(() => {
        background = undefined;
      });
  };

  const store: KeyStore = {
    async current() {
      if (Date.now() - scannedAt > RESCAN_MS) await scan();
      if (keys.length === 0) {
        await writeNewKey(config);
        await scan();
      }
      return keys[0];
    },
    async find(kid) {
      refreshInBackground();
      const known = byKid.get(kid);
      if (known) return known;
      if (Date.now() - scannedAt < MISS_RESCAN_MS) return undefined;
      await scan();
      return byKid.get(kid);
    },
    async publicJwks() {
      if (Date.now() - scannedAt > MISS_RESCAN_MS) await scan();
      if (keys.length === 0) await store.current();
      return { keys: keys.map((k) => ({ ...k.publicJwk })) };
    },
    async rotate() {
      await writeNewKey(config);
      await scan();
      return keys[0];
    },
    revision() {
      refreshInBackground();
      return revision;
    },
  };
  await scan();
  if (keys.length === 0) await store.current();
  return store;
}

/** Rotates the signing key in `config.keyDir` (for the CLI: `imaging-lake keys rotate`). */
export async function rotateSigningKey(config: KeyStoreConfig): Promise<{ kid: string; published: string[] }> {
  const store = await openKeyStore(config);
  const key = await store.rotate();
  return { kid: key.kid, published: (await store.publicJwks()).keys.map((k) => String(k.kid)) };
}

async function writeNewKey(config: KeyStoreConfig): Promise<void> {
  const alg = config.signingAlg;
  const { privateKey } = await generateKeyPair(alg, { extractable: true, ...(alg === 'RS256' ? { modulusLength: 3072 } : {}) });
  const privateJwk = await exportJWK(privateKey);
  const kid = await calculateJwkThumbprint(privateJwk);
  // Milliseconds plus a random suffix: two rotations in the same millisecond still sort and never collide.
  const createdAt = new Date();
  const file: KeyFile = { kid, alg, createdAt: createdAt.toISOString(), privateJwk: { ...privateJwk, kid, alg, use: 'sig' } };
  const name = `${String(createdAt.getTime()).padStart(15, '0')}-${randomBytes(3).toString('hex')}-${kid}.json`;
  const tmp = path.join(config.keyDir, `.${name}.tmp`);
  await fs.writeFile(tmp, JSON.stringify(file), { mode: 0o600, flag: 'wx' });
  try {
    await fs.link(tmp, path.join(config.keyDir, name));
  } finally {
    await fs.unlink(tmp).catch(() => undefined);
  }
}

async function loadKeys(dir: string): Promise<SigningKey[]> {
  const names = (await fs.readdir(dir)).filter((n) => /^\d{15}-[0-9a-f]{6}-[\w-]+\.json$/.test(n));
  const keys: SigningKey[] = [];
  for (const name of names) {
    let file: KeyFile;
    try {
      file = JSON.parse(await fs.readFile(path.join(dir, name), 'utf8')) as KeyFile;
    } catch {
      continue; // a file being deleted by a concurrent prune
    }
    const privateKey = (await importJWK(file.privateJwk, file.alg)) as KeyLike;
    const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...pub } = file.privateJwk;
    const publicJwk: JWK = { ...pub, kid: file.kid, alg: file.alg, use: 'sig' };
    const publicKey = (await importJWK(publicJwk, file.alg)) as KeyLike;
    keys.push({ kid: file.kid, alg: file.alg, createdAt: Date.parse(file.createdAt), privateKey, publicKey, publicJwk });
  }
  return keys.sort((a, b) => b.createdAt - a.createdAt);
}

/** Deletes keys whose successor has existed longer than any token they could have signed. */
async function pruneRetired(config: KeyStoreConfig, keys: SigningKey[]): Promise<SigningKey[]> {
  const keep: SigningKey[] = [];
  const graceMs = (config.localTokenMaxTtlSeconds + config.clockToleranceSeconds + 60) * 1000;
  for (let i = 0; i < keys.length; i++) {
    const successor = keys[i - 1];
    if (successor && successor.createdAt + graceMs < Date.now()) {
      const names = (await fs.readdir(config.keyDir)).filter((n) => n.endsWith(`-${keys[i].kid}.json`));
      await Promise.all(names.map((n) => fs.unlink(path.join(config.keyDir, n)).catch(() => undefined)));
      continue;
    }
    keep.push(keys[i]);
  }
  return keep;
}
