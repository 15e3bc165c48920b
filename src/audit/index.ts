/** The audit layer's public API. */
export { buildAuditEvent, auditIndexColumns, outcomeForStatus, type AuditEvent, type AuditInput, type AuditAction, type AuditSource } from './audit-event';
export { writeAuditEvent, insertAuditRows, serializeAuditRow, searchAuditEvents, countAuditEvents, readAuditEvent, ensureAuditPartitions, startAuditPartitionMaintenance, AuditWriteError, type AuditRow, type AuditSearchParams, type AuditSearchPage, type AuditPartitionMaintainer } from './audit-store';
export { createAuditWriter, auditWriterFor, closeAuditWriter, type AuditWriter, type AuditWriterOptions, type AuditWriterStats } from './audit-writer';
export { createAuditGate, beginReadAudit, auditInTransaction, auditInputFromRequest, createTransactionAuditor, type AuditLocals, type AuditRecorder, type TransactionAuditor } from './audit-response';
