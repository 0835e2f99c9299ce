// Package queue is the durable hand-off between accepting a message and
// delivering it, like Postfix's incoming/active queues and qmgr. The spool
// keeps each message as one queue file (body, then envelope) and, once it
// changed, an envelope file; the scheduler hands due messages to delivery
// (package nexthop), records each recipient's outcome before anything else
// happens to the message, and queues DSNs (package dsn writes them).
//
// Durability rule (spool.go, Writer.Commit): a message is committed (and
// the client may get its 250) only once its queue file has been
// fdatasynced through its own descriptor (so its own writeback errors are
// seen), renamed into place, and that directory fsynced. Directory fsyncs
// are shared between concurrent commits (group commit: dirSyncer in
// spool.go), so throughput is not one directory fsync per message. A commit
// that fails removes its file before the 4xx. The two system calls that
// reach the disk are in sync.go, and nowhere else.
//
// Where things are decided: the scheduler's order, retries and
// concurrency in scheduler.go and destination.go; which recipients a DSN
// reports, and to whom it goes (forward_dsn), in notify.go; what a DSN
// says in package dsn.
package queue
