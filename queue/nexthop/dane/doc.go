// Package dane authenticates an SMTP server's TLS certificate against its
// TLSA records, for the sending side: RFC 7672 (SMTP security via
// opportunistic DANE TLS) with the matching of RFC 6698 and RFC 7671. The
// caller does the DNS (it decides that the TLSA RRset is DNSSEC-secure
// and converts it to Records) and the SMTP; this package says which
// records are usable and verifies the handshake. Standard library only.
//
// Files:
//   - record.go: Record, the usable ones (Usable) and how one matches a
//     certificate;
//   - verify.go: Verify, the DANE-EE and DANE-TA checks, and the errors
//     that say which check failed;
//   - config.go: Config, the tls.Config of a STARTTLS handshake that
//     verifies with Verify instead of the WebPKI;
//   - result.go: Result and Describe, a RRset in words for logs and
//     "mailfwd lookup -v".
//
// Decisions the caller must know:
//   - Only DANE-TA(2) and DANE-EE(3) are usable for SMTP (§3.1.3):
//     PKIX-TA(0) and PKIX-EE(1), unknown selectors (not 0 or 1) or
//     matching types (not 0, 1 or 2), and digests of the wrong length are
//     not.
//   - A secure TLSA RRset of which no record is usable still makes TLS
//     mandatory, but unauthenticated (§2.2; Postfix's "encrypt"): the
//     signed records say the server does STARTTLS, so sending in clear
//     would be a downgrade, yet there is nothing to authenticate with.
//     That policy is the caller's; Usable returning none (or
//     Result.Authenticated false) tells it. Config given no usable record
//     fails every handshake rather than silently accepting any peer.
//   - DANE-EE matches the leaf certificate only, with no name, expiry or
//     chain check (§3.1.1).
//   - DANE-TA names an issuer (RFC 7671 §5.2; OpenSSL, hence Postfix,
//     likewise): a certificate the server sent above the leaf, or, when
//     the record holds the full data (matching type 0), the certificate
//     or bare public key itself even if the server left it out. The leaf
//     must then chain to it (x509 path validation at the current time or
//     the base Config's Time, the anchor as the only root, any extended
//     key usage, every certificate's dates checked) and name one
//     of the names the caller gives, the reference identifiers of
//     §3.2.2: the TLSA base domain (the MX host name, after secure CNAME
//     expansion) and the next-hop domain. Names match as x509's
//     VerifyHostname does (RFC 6125: one wildcard, whole left-most label
//     only), with the subject CN as a DNS name when the certificate has
//     no DNS SAN. A digest record (2 x 1, 2 x 2) of an anchor the server
//     did not send cannot match: §3.1.2 requires the server to send it.
//   - SNI is the caller's base ServerName, or else names[0], which
//     should be the TLSA base domain (§8.1).
//   - Either record type matching verifies the connection; the first
//     success wins. A failure names the host and the check that failed,
//     for deferral texts ("DANE: no TLSA record matched the certificate
//     of mx.example.com (records 3 1 1)"), and wraps ErrNoMatch,
//     ErrNotTrusted or ErrHostMismatch for the TLS-RPT result type.
package dane
