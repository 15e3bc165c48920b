import http, { type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import type { Express } from 'express';

/**
 * The HTTP server for an express app, built so that its requests and responses are born with
 * the app's prototypes (`app.request`, `app.response`).
 *
 * Why: express gives every request and response those prototypes with Object.setPrototypeOf as
 * it takes them. In V8 that change of prototype keeps each request's objects reachable for one
 * more young-generation collection, so they are promoted to the old generation and die there
 * (measured with --trace-gc-nvp: ~8 kB promoted per request through express, none through a
 * plain handler). The old generation then fills with dead requests and V8 runs a full
 * mark-compact of the whole ~50 MB live heap every few hundred requests (50-200 ms of main
 * thread each on a busy 2-core machine): the tail of every latency. Objects created with the
 * final prototype are left alone by express (setPrototypeOf to the same prototype changes
 * nothing) and die young. Node's own `IncomingMessage`/`ServerResponse` server options are the
 * documented way to choose these classes.
 */
export function createAppServer(app: Express, listener: RequestListener): http.Server {
  return http.createServer(
    {
      IncomingMessage: withPrototype(http.IncomingMessage, app.request) as unknown as typeof http.IncomingMessage,
      ServerResponse: withPrototype(http.ServerResponse, app.response) as unknown as typeof http.ServerResponse,
    },
    listener,
  );
}

/** A constructor that runs `base` but makes objects whose prototype is `prototype` (which must inherit from base.prototype). */
function withPrototype<A extends unknown[]>(base: new (...args: A) => IncomingMessage | ServerResponse, prototype: object): (...args: A) => object {
  if (!(prototype instanceof base)) throw new TypeError(`the app's prototype does not inherit from ${base.name}`);
  function Constructed(this: unknown, ...args: A): object {
    return Reflect.construct(base, args, Constructed);
  }
  Constructed.prototype = prototype;
  return Constructed;
}
