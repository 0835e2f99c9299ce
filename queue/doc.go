// Package queue is the durable hand-off between accepting a message and
// delivering it, like Postfix's incoming/active queues and qmgr. The spool
// keeps each message as one queue file (body, then envelope) and, once it
// changed, an envelope file; the scheduler hands due messages to delivery
// (package nexthop), records each recipient's outcome before anything else
// happens to the message, and queues DSNs (package dsn writes them).
//
// Durability rule: a message is committed (and the client may get its 250)
// only once its body and envelope files and the directory entries naming
// them have been fsynced. Directory fsyncs are shared between concurrent
// commits (group commit), so throughput is not one fsync per message.
package queue
