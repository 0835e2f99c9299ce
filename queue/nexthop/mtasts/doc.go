// Package mtasts is the sending side of SMTP MTA Strict Transport
// Security (RFC 8461): it tells delivery whether a recipient domain
// requires TLS with a WebPKI-valid certificate, and to which MX hosts.
//
// It exists because a domain without DNSSEC cannot protect its MX
// records and STARTTLS with DANE; MTA-STS protects them with a policy
// fetched over HTTPS and cached for weeks, so that an attacker on the
// path at delivery time can neither strip STARTTLS nor substitute MX
// hosts unnoticed. The cache is the protection: a policy stays in force
// for its max_age even when the TXT record or the policy host can no
// longer be reached, and it is kept in a file so that a restart does not
// open a window.
//
// The package does no DNS and knows nothing of delivery: the caller
// supplies the TXT lookup and the HTTP client, and applies the result
// (refusing, under ModeEnforce, MX hosts that Policy.MatchMX rejects and
// TLS sessions without a valid certificate for the MX host).
//
// Files:
//   - policy.go: the policy file (§3.2): ParsePolicy, Policy.MatchMX,
//     and the domain name syntax shared by the other files.
//   - txt.go: the _mta-sts TXT record (§3.1): ParseTXT.
//   - fetch.go: Fetch, the HTTPS GET of the policy (§3.3): WebPKI
//     verification, no redirects, 200 text/plain only, size cap, and
//     FetchError with its TLS-RPT result type.
//   - cache.go: Cache, the discovery of §5.1 (TXT id compared with the
//     cached policy's, refetch on change, expiry and refresh, keeping a
//     cached policy when the TXT record or the fetch fails, failed
//     fetches rate-limited) and its Result.
//   - persist.go: the cache file, JSON written atomically (temporary
//     file, fsync, rename) and read back at startup.
package mtasts
