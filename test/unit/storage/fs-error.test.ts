import { BlobStoreFullError, BlobStoreUnavailableError } from '../../../src/storage/blob-store';
import { toBlobStoreError } from '../../../src/storage/fs-error';

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: simulated`), { code });
}

describe('toBlobStoreError', () => {
  test.each(['ENOSPC', 'EDQUOT', 'EFBIG'])('%s means the store is full', (code) => {
    const mapped = toBlobStoreError(errno(code), 'writing staging file');
    expect(mapped).toBeInstanceOf(BlobStoreFullError);
    expect((mapped as BlobStoreFullError).message).toContain(code);
    expect((mapped as BlobStoreFullError).cause).toMatchObject({ code });
  });

  test.each(['EIO', 'EROFS'])('%s means the store is unavailable', (code) => {
    expect(toBlobStoreError(errno(code), 'x')).toBeInstanceOf(BlobStoreUnavailableError);
  });

  test('other errors pass through unchanged', () => {
    const err = errno('EACCES');
    expect(toBlobStoreError(err, 'x')).toBe(err);
  });
});
