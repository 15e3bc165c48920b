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

  test('AUDIT_SPOOL_DIR: none by default (group-commit INSERTs), the directory when given, off turns it off', () => {
    expect(loadConfig({}).auditSpoolDir).toBeUndefined();
    expect(loadConfig({ AUDIT_SPOOL_DIR: '/var/spool/lake' }).auditSpoolDir).toBe('/var/spool/lake');
    expect(loadConfig({ S3_BUCKET: 'lake', AUDIT_SPOOL_DIR: 'spool' }).auditSpoolDir).toBe(path.resolve('spool'));
    expect(loadConfig({ AUDIT_SPOOL_DIR: 'off' }).auditSpoolDir).toBeUndefined();
    expect(loadConfig({}).auditSpoolShipDelayMs).toBe(50);
    expect(loadConfig({ AUDIT_SPOOL_SHIP_DELAY_MS: '0' }).auditSpoolShipDelayMs).toBe(0);
    expect(() => loadConfig({ AUDIT_SPOOL_SHIP_DELAY_MS: '-1' })).toThrow(ConfigError);
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

  test('DIMSE: off without DIMSE_PORT; with it, its host (HOST by default), AE title and peers from DIMSE_PEERS', () => {
    expect(loadConfig({}).dimse).toBeUndefined();
    expect(loadConfig({ DIMSE_PORT: '11112', HOST: '0.0.0.0' }).dimse).toEqual({ port: 11112, host: '0.0.0.0', aeTitle: 'IMAGING_LAKE', peers: [] });
    const peers = '[{"aeTitle": "OCT_1", "host": "10.0.0.5", "projects": ["glaucoma"]}, {"aeTitle": "PACS", "host": "10.0.0.9", "port": 104, "services": ["find", "move"]}]';
    expect(loadConfig({ DIMSE_PORT: '104', DIMSE_HOST: '10.0.0.1', DIMSE_AE_TITLE: 'LAKE', DIMSE_PEERS: peers }).dimse).toEqual({
      port: 104,
      host: '10.0.0.1',
      aeTitle: 'LAKE',
      peers: [
        // Store only unless the peer is given other services.
        { aeTitle: 'OCT_1', host: '10.0.0.5', projects: ['glaucoma'], services: ['store'] },
        { aeTitle: 'PACS', host: '10.0.0.9', port: 104, projects: [], services: ['find', 'move'] },
      ],
    });
  });

  test('DIMSE: bad AE titles and peer lists fail fast naming the variable', () => {
    expect(() => loadConfig({ DIMSE_PORT: '104', DIMSE_AE_TITLE: 'A_TITLE_LONGER_THAN_16' })).toThrow(/DIMSE_AE_TITLE/);
    expect(() => loadConfig({ DIMSE_PORT: '104', DIMSE_AE_TITLE: 'BACK\\SLASH' })).toThrow(/DIMSE_AE_TITLE/);
    expect(() => loadConfig({ DIMSE_PORT: '104', DIMSE_PEERS: 'OCT_1' })).toThrow(/DIMSE_PEERS: not JSON/);
    expect(() => loadConfig({ DIMSE_PORT: '104', DIMSE_PEERS: '[{"aeTitle": ""}]' })).toThrow(/DIMSE_PEERS: 0.aeTitle/);
    expect(() => loadConfig({ DIMSE_PORT: '104', DIMSE_PEERS: '[{"aeTitle": "OCT", "project": "x"}]' })).toThrow(/DIMSE_PEERS/);
    expect(() => loadConfig({ DIMSE_PORT: '104', DIMSE_PEERS: '[{"aeTitle": "OCT", "projects": ["../x"]}]' })).toThrow(/DIMSE_PEERS: 0.projects.0/);
    expect(() => loadConfig({ DIMSE_PORT: '104', DIMSE_PEERS: '[{"aeTitle": "OCT", "services": ["delete"]}]' })).toThrow(/DIMSE_PEERS: 0.services.0/);
    expect(() => loadConfig({ DIMSE_PORT: '104', DIMSE_PEERS: '[{"aeTitle": "OCT", "port": 70000}]' })).toThrow(/DIMSE_PEERS: 0.port/);
  });

  test('byte sizes', () => {
    expect(parseByteSize('512MB')).toBe(512 * 1024 ** 2);
    expect(parseByteSize('4GiB')).toBe(4 * 1024 ** 3);
    expect(parseByteSize('1000')).toBe(1000);
  });
});
