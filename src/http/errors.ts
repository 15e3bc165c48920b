/** One error type for HTTP answers: a status and a message; the protocol adapters shape the body. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/** 503: a backing service (database, blob store) cannot be reached; the client may retry. */
export class ServiceUnavailableError extends HttpError {
  constructor(message: string) {
    super(503, message, { 'Retry-After': '5' });
    this.name = 'ServiceUnavailableError';
  }
}
