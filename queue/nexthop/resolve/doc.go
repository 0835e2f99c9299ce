// Package resolve is the DNS client of outbound delivery.
//
// It exists because net.Resolver hides what delivery has to see: the
// DNSSEC AD bit (DANE, RFC 7672, needs to know whether the MX and TLSA
// answers were validated), TLSA records, the difference between SERVFAIL
// (defer the mail) and NXDOMAIN (bounce it), and TTLs. Like Postfix with
// smtp_dns_support_level=dnssec, it trusts the AD bit of the configured
// resolver, which therefore must be a validating resolver reached over a
// trusted path (normally on localhost); a DNSSEC-bogus answer arrives from
// such a resolver as SERVFAIL and is reported as ErrTemporary, so bogus
// means defer.
//
// Files:
//   - resolver.go: the Resolver, its configuration (servers, resolv.conf,
//     timeouts) and the wire exchange: EDNS0 with the DO bit, UDP with TCP
//     fallback on truncation, retries and failover across servers.
//   - errors.go: ErrNotFound / ErrTemporary and the Error type that
//     carries the query and response code.
//   - cache.go: the bounded TTL cache of answers (positive and, per
//     RFC 2308, negative) and the in-flight table that lets concurrent
//     identical queries share one upstream query.
//   - lookup.go: the lookups delivery uses (MX, addresses, TLSA, TXT), their
//     result types, and CNAME chasing.
//   - ipv6.go: HostHasIPv6, the default for whether to ask for AAAA.
package resolve
