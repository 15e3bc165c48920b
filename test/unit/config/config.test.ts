import path from 'node:path';
import { ConfigError, loadConfig, parseByteSize } from '../../../src/config';

describe('loadConfig', () => {
  test('defaults: embedded database and filesystem blobs under ./data on 127.0.0.1:8080', () => {
    const c = loadConfig({});
    expect(c.port).toBe(8080);
    expect(c.host).toBe('127.0.0.1');
    expect(c.database).toEqual({ kind: 'embedded', dir: path.resolve('data', 'pg'), sharedBuffersMb: 16 });
    expect(loadConfig({ EMBEDDED_SHARED_BUFFERS_MB: '128' }).database).toMatchObject({ kind: 'embedded', sharedBuffersMb: 128 });
    expect(() => loadConfig({ EMBEDDED_SHARED_BUFFERS_MB: '8' })).toThrow(ConfigError);
    expect(c.blobs).toEqual({ kind: 'fs', root: path.resolve('data', 'store') });
    expect(c.maxRequestBytes).toBe(4 * 1024 ** 3);
  });

  test('DATABASE_URL and S3_BUCKET switch the backends', () => {
    const c = loadConfig({
      DATABASE_URL: 'postgres://u@db:5432/lake',
      S3_BUCKET: 'lake-blobs',
      S3_ENDPOINT: 'http://minio:9000',
      S3_FORCE_PATH_STYLE: 'true',
    });
    expect(c.database).toMatchObject({ kind: 'postgres', url: 'postgres://u@db:5432/lake', poolMax: 10, poolIdleSeconds: 600 });
    expect(c.blobs).toMatchObject({ kind: 's3', bucket: 'lake-blobs', endpoint: 'http://minio:9000', forcePathStyle: true });
  });

  test('DB_POOL_IDLE_SECONDS sets how long an idle PostgreSQL connection is kept', () => {
    const url = 'postgres://u@db:5432/lake';
    expect(loadConfig({ DATABASE_URL: url, DB_POOL_IDLE_SECONDS: '30' }).database).toMatchObject({ poolIdleSeconds: 30 });
    expect(() => loadConfig({ DATABASE_URL: url, DB_POOL_IDLE_SECONDS: '0' })).toThrow(/DB_POOL_IDLE_SECONDS/);
  });

  test('bad values fail fast naming the variable', () => {
    expect(() => loadConfig({ PORT: 'eighty' })).toThrow(ConfigError);
    expect(() => loadConfig({ DATABASE_URL: 'mysql://x' })).toThrow(/DATABASE_URL/);
    expect(() => loadConfig({ MAX_REQUEST_BYTES: 'lots' })).toThrow(/MAX_REQUEST_BYTES/);
  });

  test('MEMORY_RELEASE_SLACK: 16 MiB by default, 0 turns the release off, bad values fail', () => {
    expect(loadConfig({}).memoryReleaseSlackBytes).toBe(16 * 1024 ** 2);
    expect(loadConfig({ MEMORY_RELEASE_SLACK: '0' }).memoryReleaseSlackBytes).toBe(0);
    expect(loadConfig({ MEMORY_RELEASE_SLACK: '64MiB' }).memoryReleaseSlackBytes).toBe(64 * 1024 ** 2);
    expect(() => loadConfig({ MEMORY_RELEASE_SLACK: 'some' })).toThrow(/MEMORY_RELEASE_SLACK/);
  });

  test('QIDO_STUDY_CACHE_SIZE: 128 MiB by default, 0 keeps no study results, bad values fail', () => {
    expect(loadConfig({}).qidoStudyCacheBytes).toBe(128 * 1024 ** 2);
    expect(loadConfig({ QIDO_STUDY_CACHE_SIZE: '0' }).qidoStudyCacheBytes).toBe(0);
    expect(loadConfig({ QIDO_STUDY_CACHE_SIZE: '256MiB' }).qidoStudyCacheBytes).toBe(256 * 1024 ** 2);
    expect(() => loadConfig({ QIDO_STUDY_CACHE_SIZE: '-1' })).toThrow(/QIDO_STUDY_CACHE_SIZE/);
  });

  test('byte sizes', () => {
    expect(parseByteSize('512MB')).toBe(512 * 1024 ** 2);
    expect(parseByteSize('4GiB')).toBe(4 * 1024 ** 3);
    expect(parseByteSize('1000')).toBe(1000);
  });
});
