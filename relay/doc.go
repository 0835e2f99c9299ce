// Package relay is the SMTP front end, Postfix's smtpd: it accepts mail only
// for relay domains, resolves every recipient through routing while the
// client waits at RCPT, streams DATA into the spool and answers 250 only
// once the message is durable.
//
// Where things are decided:
//   - the 250 after DATA: session.data (server.go) returns replyQueued
//     only after queue.Writer.Commit succeeded; any other reply means the
//     message was not queued (the writer removes its file);
//   - the per-recipient forwarding decision (local or external forward,
//     with which sender, From rewriting allowed or not): forward.go;
//   - the SRS decisions, which sender a forward carries and what a bounce
//     to the SRS domain may do: srs.go (the codec is routing/srs);
//   - relay policy for addresses (sender-specified routing): policy.go;
//   - every reply code: replies.go, in one table, each provoked through a
//     socket by TestDialogReplyTable;
//   - the Received header and the hop count (loop guard): server.go's
//     trace.field (golden cases in testdata/received.golden) and
//     received.go (receivedCounter).
package relay
