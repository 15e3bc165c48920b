/**
 * The privacy HMAC key: from PRIVACY_KEY, or a key file (PRIVACY_KEY_FILE, else
 * DATA_DIR/keys/privacy.key generated with 32 random bytes, mode 0600, on first start).
 * Kept in a file, like the token signing keys, so it never lands in a database dump.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, parsePrivacyKey, type PrivacyConfig } from '../config';

/** Returns the configured key, reading (or, when not named explicitly, creating) the key file. */
export function loadPrivacyKey(config: Pick<PrivacyConfig, 'key' | 'keyFile' | 'keyFileGiven'>): Buffer {
  if (config.key) return config.key;
  const existing = readKeyFile(config.keyFile);
  if (existing) return existing;
  if (config.keyFileGiven) throw new ConfigError(`invalid configuration: PRIVACY_KEY_FILE: ${config.keyFile} does not exist`);
  fs.mkdirSync(path.dirname(config.keyFile), { recursive: true, mode: 0o700 });
  try {
    // 'wx': two processes starting together on one DATA_DIR keep whichever key was written first.
    fs.writeFileSync(config.keyFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const created = readKeyFile(config.keyFile);
  if (!created) throw new ConfigError(`invalid configuration: privacy key file ${config.keyFile} is empty`);
  return created;
}

function readKeyFile(file: string): Buffer | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  if (text.trim() === '') return undefined;
  return parsePrivacyKey(text, `privacy key file ${file}`);
}
