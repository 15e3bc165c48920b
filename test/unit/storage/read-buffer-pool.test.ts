import { ReadBufferPool } from '../../../src/storage/read-buffer-pool';

describe('ReadBufferPool', () => {
  test('hands out buffers of its chunk size', () => {
    const pool = new ReadBufferPool(1024, 2);
    expect(pool.take().length).toBe(1024);
  });

  test('a chunk given back (even a shorter view of it) is the memory handed out next', () => {
    const pool = new ReadBufferPool(1024, 2);
    const a = pool.take();
    pool.release(a.subarray(0, 100));
    const b = pool.take();
    expect(b.buffer).toBe(a.buffer);
    expect(b.length).toBe(1024);
  });

  test('a second release of the same memory is ignored, so two takes never share memory', () => {
    const pool = new ReadBufferPool(1024, 4);
    const a = pool.take();
    pool.release(a);
    pool.release(a.subarray(0, 10));
    expect(pool.idleCount).toBe(1);
    expect(pool.take().buffer).not.toBe(pool.take().buffer);
  });

  test('buffers it did not hand out are ignored', () => {
    const pool = new ReadBufferPool(1024, 4);
    pool.release(Buffer.allocUnsafeSlow(1024));
    pool.release(Buffer.from('x'));
    expect(pool.idleCount).toBe(0);
  });

  test('keeps at most maxIdle buffers', () => {
    const pool = new ReadBufferPool(1024, 2);
    const taken = [pool.take(), pool.take(), pool.take()];
    for (const b of taken) pool.release(b);
    expect(pool.idleCount).toBe(2);
  });
});
