import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig, parsePrivacyKey } from '../../../src/config';
import { loadPrivacyKey } from '../../../src/privacy/privacy-key';

describe('privacy configuration and key', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'il-privacy-'));
  });
  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('defaults: key file under DATA_DIR/keys, 365 days, US/SC/OP and Secondary Capture withheld', () => {
    const c = loadConfig({ DATA_DIR: dir });
    expect(c.privacy).toEqual({
      key: undefined,
      keyFile: path.join(dir, 'keys', 'privacy.key'),
      keyFileGiven: false,
      dateShiftMaxDays: 365,
      withholdModalities: ['US', 'SC', 'OP'],
      withholdSopClassPrefixes: ['1.2.840.10008.5.1.4.1.1.7'],
    });
  });

  test('PRIVACY_KEY in hex or base64, at least 32 bytes; shorter or garbage fails naming the variable', () => {
    const hex = 'ab'.repeat(32);
    expect(loadConfig({ PRIVACY_KEY: hex }).privacy.key).toEqual(Buffer.from(hex, 'hex'));
    const b64 = Buffer.alloc(48, 7).toString('base64');
    expect(loadConfig({ PRIVACY_KEY: b64 }).privacy.key).toEqual(Buffer.alloc(48, 7));
    expect(() => loadConfig({ PRIVACY_KEY: 'ab'.repeat(16) })).toThrow(/PRIVACY_KEY: 16 bytes, at least 32/);
    expect(() => loadConfig({ PRIVACY_KEY: 'not a key!' })).toThrow(ConfigError);
    expect(() => parsePrivacyKey('')).toThrow(ConfigError);
  });

  test('DATE_SHIFT_MAX_DAYS and DEID_WITHHOLD_MODALITIES are read and validated', () => {
    const c = loadConfig({ DATE_SHIFT_MAX_DAYS: '30', DEID_WITHHOLD_MODALITIES: 'us, xa ,' });
    expect(c.privacy.dateShiftMaxDays).toBe(30);
    expect(c.privacy.withholdModalities).toEqual(['US', 'XA']);
    expect(() => loadConfig({ DATE_SHIFT_MAX_DAYS: '0' })).toThrow(/DATE_SHIFT_MAX_DAYS/);
  });

  test('without a key, a random one is written once (mode 0600) and read back on the next start', () => {
    const config = loadConfig({ DATA_DIR: dir }).privacy;
    const first = loadPrivacyKey(config);
    expect(first.length).toBe(32);
    expect(fs.statSync(config.keyFile).mode & 0o777).toBe(0o600);
    expect(loadPrivacyKey(config)).toEqual(first);
    // A given PRIVACY_KEY wins over the file.
    expect(loadPrivacyKey({ ...config, key: Buffer.alloc(32, 1) })).toEqual(Buffer.alloc(32, 1));
  });

  test('a named PRIVACY_KEY_FILE must exist: it is never generated', () => {
    const config = loadConfig({ DATA_DIR: dir, PRIVACY_KEY_FILE: path.join(dir, 'missing.key') }).privacy;
    expect(() => loadPrivacyKey(config)).toThrow(/PRIVACY_KEY_FILE/);
    fs.writeFileSync(config.keyFile, Buffer.alloc(40, 3).toString('base64'));
    expect(loadPrivacyKey(config)).toEqual(Buffer.alloc(40, 3));
  });
});
