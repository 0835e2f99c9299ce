// Package nexthop hands messages to the next hop: an SMTP or LMTP client
// (client.go speaks the protocol, nexthop.go decides what to send and
// keeps each server's connection pool), MX delivery to the Internet
// (mx.go), the transport routing that picks a recipient's destination
// (route.go), and the TLS an MX host must get (security.go: the one home
// of that decision — tls_policies, DANE, MTA-STS, default policy). It
// knows nothing of queues or retries: the scheduler (package queue)
// decides when, this package how and where.
//
// Its subpackages do one job each for security.go: resolve (the DNS
// delivery asks, with the DNSSEC AD bit), dane (TLSA matching, RFC 7672),
// mtasts (RFC 8461 policies) and tlsrpt (RFC 8460 reports).
// docs/outbound-security.md maps them to Postfix's settings.
package nexthop
