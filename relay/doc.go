// Package relay is the SMTP front end, Postfix's smtpd: it accepts mail only
// for relay domains, resolves every recipient through routing while the
// client waits at RCPT, streams DATA into the spool and answers 250 only
// once the message is durable. Reply codes for every outcome are in
// replies.go, in one place.
package relay
