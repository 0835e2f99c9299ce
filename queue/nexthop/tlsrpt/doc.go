// Package tlsrpt is the sending side of SMTP TLS Reporting (RFC 8460): it
// counts, per policy domain, how outbound TLS sessions went and once a day
// sends each domain that asks for it (a TXT record at _smtp._tls.DOMAIN) an
// aggregate JSON report. Domains publishing MTA-STS or DANE use these
// reports to notice broken certificates or stripped STARTTLS before their
// mail starts bouncing, so the reports are only useful if they are
// complete and arrive daily; hence counts are persisted across restarts
// and unsent days are retried.
//
// Nothing here starts by itself: the relay creates a Recorder, calls
// Success/Failure from its delivery code, and, if reporting is
// configured, runs a Reporter (whose Run also flushes the counts to disk;
// without one the caller calls Recorder.Flush itself).
//
// Files:
//   - txt.go: ParseTXT, the _smtp._tls TXT record (RFC 8460 §3).
//   - recorder.go: Recorder, the bounded, concurrency-safe counters and
//     their JSON persistence file.
//   - report.go: the report's JSON structure (§4.4) and building one
//     report per policy domain for a UTC day.
//   - deliver.go: the two transports of §5: the multipart/report mail
//     message for mailto: and the HTTPS POST for https:.
//   - reporter.go: Reporter, which looks up each domain's rua, sends the
//     day's reports, remembers what was delivered and retries the rest
//     (SendDay), plus Run, its daily scheduler and periodic flusher.
//   - testdata/: golden reports; go test -update rewrites them.
package tlsrpt
