import { parse, protocol, type PGlite, type Results } from '@electric-sql/pglite';

/**
 * Named prepared statements for the embedded engine. PGlite's `query()` parses, analyses and
 * plans every statement anew (an unnamed statement), in six calls into the engine. Planning asks
 * the size of every table and index a statement touches, and the engine answers each with a
 * seek to the file's end that its filesystem layer turns into an fstat: some 2 ms per stored
 * instance, about a tenth of the server's CPU for single-instance STOW-RS, before the planning
 * itself. A statement with parameters is parsed here once under a name, and each later run is
 * one call: Bind, Describe, Execute and Sync together. The engine keeps the statement's plan as
 * PostgreSQL does for any named statement (custom plans first, then the generic one when it is
 * as good).
 *
 * The texts kept are bounded (least recently used closed first); a statement whose cached plan
 * no longer fits a changed table is closed and prepared again once.
 */

const { serialize } = protocol;

/** Statements kept prepared at most; each holds its parse tree and plans in the engine's memory. */
const MAX_STATEMENTS = 128;

interface Prepared {
  name: string;
  /** Parameter type oids, from Describe Statement: how each value is serialised. */
  types: number[];
}

/** PostgreSQL's answer when a prepared statement's result columns changed under it (a DDL). */
function isStalePlan(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return e?.code === '0A000' && /cached plan must not change result type/.test(e.message ?? '');
}

export class EmbeddedStatements {
  private readonly prepared = new Map<string, Prepared>();
  private sequence = 0;

  constructor(private readonly db: PGlite) {}

  /** Runs `text` with `params` as a named prepared statement; answers as `PGlite.query` does. */
  async query<T>(text: string, params: readonly unknown[]): Promise<Results<T>> {
    await this.db._checkReady();
    // The same mutexes as PGlite.query: not inside another caller's PGlite transaction, one query at a time.
    return this.db._runExclusiveTransaction(() =>
      this.db._runExclusiveQuery(async () => {
        try {
          return await this.run<T>(text, params);
        } catch (err) {
          if (!isStalePlan(err)) throw err;
          await this.forget(text);
          return this.run<T>(text, params);
        }
      }),
    );
  }

  /** Statements currently prepared (for tests). */
  get size(): number {
    return this.prepared.size;
  }

  private async run<T>(text: string, params: readonly unknown[]): Promise<Results<T>> {
    const statement = this.prepared.get(text) ?? (await this.prepare(text));
    // Most recently used last: Map keeps insertion order, so re-insert.
    this.prepared.delete(text);
    this.prepared.set(text, statement);
    const values = params.map((value, i) => {
      if (value === null || value === undefined) return null;
      const serializer = this.db.serializers[statement.types[i]!];
      return serializer ? serializer(value) : String(value);
    });
    const replies = await this.db.execProtocolStream(
      Buffer.concat([
        serialize.bind({ statement: statement.name, values }),
        serialize.describe({ type: 'P' }),
        serialize.execute({}),
        serialize.sync(),
      ]),
      { syncToFs: false },
    );
    return parse.parseResults(replies, this.db.parsers)[0] as Results<T>;
  }

  private async prepare(text: string): Promise<Prepared> {
    if (this.prepared.size >= MAX_STATEMENTS) {
      const [oldest] = this.prepared.keys();
      await this.forget(oldest!);
    }
    const name = `il_embedded_${++this.sequence}`;
    const replies = await this.db.execProtocolStream(
      Buffer.concat([serialize.parse({ name, text }), serialize.describe({ type: 'S', name }), serialize.sync()]),
      { syncToFs: false },
    );
    const statement = { name, types: parse.parseDescribeStatementResults(replies) };
    this.prepared.set(text, statement);
    return statement;
  }

  private async forget(text: string): Promise<void> {
    const statement = this.prepared.get(text);
    if (!statement) return;
    this.prepared.delete(text);
    await this.db.execProtocolStream(Buffer.concat([serialize.close({ type: 'S', name: statement.name }), serialize.sync()]), { syncToFs: false });
  }
}
