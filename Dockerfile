# syntax=docker/dockerfile:1
# imaging-lake: DICOMweb + FHIR R4 server.
#   docker build -t imaging-lake .
#   docker run -p 8080:8080 -v imaging-lake-data:/var/lib/imaging-lake imaging-lake
# With no DATABASE_URL / S3_BUCKET it runs the embedded PostgreSQL engine and the filesystem
# blob store under DATA_DIR; docker-compose.yml wires PostgreSQL and MinIO instead.

ARG NODE_IMAGE=node:20-slim

# ---- build: all dependencies, compile TypeScript to dist/ ----
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would run the build before the sources are here; the build
# below only needs tsc, which has no install script.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
# dicomweb/ is read at compile time too (src imports dicomweb/levels.json).
COPY dicomweb ./dicomweb
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies and the compiled server only ----
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    DATA_DIR=/var/lib/imaging-lake
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/dist ./dist
COPY migrations ./migrations
COPY dicomweb ./dicomweb
COPY fhir-profiles ./fhir-profiles
COPY conformance ./conformance
COPY bin ./bin
# Code stays root-owned and read-only for the server; only DATA_DIR is writable.
RUN mkdir -p /var/lib/imaging-lake && chown node:node /var/lib/imaging-lake
USER node
VOLUME ["/var/lib/imaging-lake"]
EXPOSE 8080 11112
# slim has no curl: node's own fetch asks /healthz (liveness; /readyz also checks DB and store).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/healthz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# The server handles SIGTERM itself (drains, closes the database); run with `--init` or
# compose `init: true` so a PID 1 reaper is present.
# --max-semi-space-size: see bin/server-node-flags.js (keeps the young generation at 16 MB).
CMD ["node", "--max-semi-space-size=8", "dist/main.js", "serve"]
