package nexthop

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"mailfwd/queue/nexthop/dane"
	"mailfwd/queue/nexthop/mtasts"
	"mailfwd/queue/nexthop/resolve"
	"mailfwd/queue/nexthop/tlsrpt"
)

// Outbound transport security for MX delivery: the one place that decides
// which TLS a connection to a domain's MX host must have, in Postfix's
// order of strength:
//
//  1. an explicit tls_policies entry for the domain (Postfix's
//     smtp_tls_policy_maps) overrides everything below;
//  2. DANE (RFC 7672): the MX answer and the host's addresses are
//     DNSSEC-secure and the host has secure TLSA records: usable ones
//     (DANE-EE, DANE-TA) mean TLS verified against them, unusable ones
//     mean TLS without authentication; a TLSA lookup that fails (a bogus
//     answer: SERVFAIL) makes the host unusable for now;
//  3. MTA-STS (RFC 8461): enforce means only the policy's MX hosts, TLS
//     verified with WebPKI for the host's name; testing means deliver as
//     without a policy, and report what verification found;
//  4. else the configured default (tls_policy), usually opportunistic.
//
// DANE wins over MTA-STS (RFC 8461 §2). Outcomes of the policy-driven
// sessions go to the TLS-RPT recorder and the metrics.

// DNS is what MX delivery asks the DNS: *resolve.Resolver is one.
type DNS interface {
	LookupMX(ctx context.Context, domain string) (resolve.MXResult, error)
	LookupAddrs(ctx context.Context, host string) (resolve.AddrResult, error)
	LookupTLSA(ctx context.Context, port int, host string) (resolve.TLSAResult, error)
}

// Security is the outbound security configuration of MX delivery.
type Security struct {
	// DANE enables RFC 7672 (it needs a validating resolver whose AD bit
	// is believed: dns.dnssec).
	DANE bool
	// STS, if set, supplies MTA-STS policies.
	STS *mtasts.Cache
	// RootCAs verify MTA-STS hosts (nil: the system's roots).
	RootCAs *x509.CertPool
	// Override is a tls_policies entry for a domain: when it reports one,
	// neither DANE nor MTA-STS applies.
	Override func(domain string) (policy string, ok bool)
	// Report, if set, records the sessions for TLS-RPT.
	Report *tlsrpt.Recorder
	// Observe, if set, counts outcomes: policy "dane", "mta-sts",
	// "mta-sts-testing"; result "verified", "failed", "no-starttls".
	Observe func(policy, result string)
}

// HostTLS is the TLS a connection to one MX host must have.
type HostTLS struct {
	Policy string      // TLSRequire, TLSOpportunistic or TLSNone
	Config *tls.Config // for the handshake; nil: the hop's default
	// Key tells apart the connection pools of one address under
	// different requirements.
	Key string
	// Label says which rule chose it, for logs and lookup -v.
	Label string

	report func(ok bool, rt tlsrpt.ResultType, why string)
}

// DomainPolicy is what applies to a domain before its hosts are known.
type DomainPolicy struct {
	Override string         // a tls_policies entry, "" if none
	STS      *mtasts.Result // nil when MTA-STS is off or the lookup failed
}

// Enforced tells whether an MTA-STS policy in enforce mode applies.
func (p DomainPolicy) Enforced() bool {
	return p.Override == "" && p.STS != nil && p.STS.Mode() == mtasts.ModeEnforce
}

// String describes the domain's policy for logs and lookup -v.
func (p DomainPolicy) String() string {
	switch {
	case p.Override != "":
		return "tls_policies: " + p.Override + " (DANE and MTA-STS not used)"
	case p.STS != nil && p.STS.Policy != nil:
		return p.STS.String()
	default:
		return "no MTA-STS policy"
	}
}

// ForDomain looks up what applies to domain as a whole.
func (s *Security) ForDomain(ctx context.Context, domain string) DomainPolicy {
	if s == nil {
		return DomainPolicy{}
	}
	if s.Override != nil {
		if p, ok := s.Override(domain); ok {
			return DomainPolicy{Override: p}
		}
	}
	var p DomainPolicy
	if s.STS != nil {
		if r, err := s.STS.Get(ctx, domain); err == nil {
			p.STS = r
		}
	}
	return p
}

// errNoMatchingMX: an MTA-STS enforce policy lists none of the MX hosts.
var errNoMatchingMX = errors.New("no MX host matches the domain's MTA-STS policy")

// errTLSALookup: the TLSA lookup of a host failed (a bogus answer, say):
// the host cannot be used until it succeeds.
var errTLSALookup = errors.New("TLSA lookup failed")

// ForHost decides the TLS of one MX host. secureMX is whether the MX
// answer (or, for an implicit MX, the domain's address) was DNSSEC-secure;
// addrs is the host's address answer.
func (s *Security) ForHost(ctx context.Context, dns DNS, dp DomainPolicy, domain, host string, port int, secureMX bool, addrs resolve.AddrResult) (*HostTLS, error) {
	if s == nil || dp.Override != "" {
		return nil, nil // the hop's own policy
	}
	if s.DANE && secureMX && addrs.Secure {
		tl, err := dns.LookupTLSA(ctx, port, host)
		switch {
		case errors.Is(err, resolve.ErrNotFound):
		case err != nil:
			s.count("dane", "failed")
			s.failure(tlsrpt.PolicyKey{Type: tlsrpt.PolicyTLSA, Domain: domain}, host, tlsrpt.ResultDNSSECInvalid, err.Error())
			return nil, fmt.Errorf("%w for %s: %w", errTLSALookup, host, err)
		case tl.Secure && len(tl.Records) > 0:
			return s.daneHost(domain, host, addrs, tl.Records), nil
		}
	}
	if dp.STS != nil && dp.STS.Policy != nil {
		switch dp.STS.Mode() {
		case mtasts.ModeEnforce:
			return s.stsHost(domain, host, dp.STS, true), nil
		case mtasts.ModeTesting:
			return s.stsHost(domain, host, dp.STS, false), nil
		}
	}
	return nil, nil
}

func (s *Security) daneHost(domain, host string, addrs resolve.AddrResult, tl []resolve.TLSA) *HostTLS {
	var recs []dane.Record
	var text []string
	for _, r := range tl {
		recs = append(recs, dane.Record{Usage: r.Usage, Selector: r.Selector, MatchingType: r.MatchingType, Data: r.Data})
		text = append(text, fmt.Sprintf("%d %d %d %x", r.Usage, r.Selector, r.MatchingType, r.Data))
	}
	key := tlsrpt.PolicyKey{Type: tlsrpt.PolicyTLSA, String: text, Domain: domain, MXHost: []string{host}}
	usable := dane.Usable(recs)
	h := &HostTLS{Policy: TLSRequire, Key: "dane:" + strings.Join(text, ";")}
	h.report = func(ok bool, rt tlsrpt.ResultType, why string) {
		if ok {
			s.count("dane", "verified")
			s.success(key)
			return
		}
		s.count("dane", "failed")
		s.failure(key, host, rt, why)
	}
	if len(usable) == 0 {
		// RFC 7672 §2.2: TLSA records, none usable: TLS is still
		// required, without authentication (Postfix "encrypt").
		h.Label = "DANE: TLSA records, none usable: TLS required, not authenticated"
		h.Config = &tls.Config{ServerName: host, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
		h.Config.VerifyConnection = func(tls.ConnectionState) error { h.report(true, "", ""); return nil }
		return h
	}
	names := []string{host, domain}
	if addrs.CNAME != "" {
		names = append([]string{addrs.CNAME}, names...)
	}
	cfg := dane.Config(&tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}, usable, names)
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		err := verify(cs)
		if err != nil {
			h.report(false, daneResult(err), err.Error())
			return err
		}
		h.report(true, "", "")
		return nil
	}
	h.Config = cfg
	h.Label = dane.Describe(recs)
	return h
}

// stsHost is TLS to an MTA-STS host: verified and required (enforce), or
// as without a policy with the verification only reported (testing).
func (s *Security) stsHost(domain, host string, r *mtasts.Result, enforce bool) *HostTLS {
	key := tlsrpt.PolicyKey{Type: tlsrpt.PolicySTS, String: strings.Split(strings.TrimSpace(r.Policy.String()), "\n"), Domain: domain, MXHost: r.Policy.MX}
	metric := "mta-sts"
	if !enforce {
		metric = "mta-sts-testing"
	}
	h := &HostTLS{Key: fmt.Sprintf("sts:%s:%v", host, enforce)}
	h.report = func(ok bool, rt tlsrpt.ResultType, why string) {
		if ok {
			s.count(metric, "verified")
			s.success(key)
			return
		}
		s.count(metric, "failed")
		s.failure(key, host, rt, why)
	}
	verify := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no certificate")
		}
		opts := x509.VerifyOptions{Roots: s.RootCAs, DNSName: host, Intermediates: x509.NewCertPool()}
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(opts)
		return err
	}
	cfg := &tls.Config{ServerName: host, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	if enforce {
		h.Policy = TLSRequire
		h.Label = "MTA-STS enforce: TLS verified for " + host
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if err := verify(cs); err != nil {
				h.report(false, certResult(err), err.Error())
				return fmt.Errorf("MTA-STS: certificate of %s: %w", host, err)
			}
			h.report(true, "", "")
			return nil
		}
	} else {
		h.Policy = TLSOpportunistic
		h.Label = "MTA-STS testing: delivered as without a policy, verification reported"
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if err := verify(cs); err != nil {
				h.report(false, certResult(err), err.Error())
			} else {
				h.report(true, "", "")
			}
			return nil
		}
	}
	h.Config = cfg
	return h
}

// noSTARTTLS records a required-TLS host that did not offer STARTTLS.
func (h *HostTLS) noSTARTTLS(why string) {
	if h != nil && h.report != nil {
		h.report(false, tlsrpt.ResultSTARTTLSNotSupported, why)
	}
}

// daneResult is the TLS-RPT result type of a DANE verification error.
func daneResult(err error) tlsrpt.ResultType {
	var inv x509.CertificateInvalidError
	switch {
	case errors.Is(err, dane.ErrHostMismatch):
		return tlsrpt.ResultCertificateHostMismatch
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return tlsrpt.ResultCertificateExpired
	case errors.Is(err, dane.ErrNotTrusted):
		return tlsrpt.ResultCertificateNotTrusted
	default:
		return tlsrpt.ResultValidationFailure
	}
}

// certResult is the TLS-RPT result type of a WebPKI verification error.
func certResult(err error) tlsrpt.ResultType {
	var host x509.HostnameError
	var inv x509.CertificateInvalidError
	switch {
	case errors.As(err, &host):
		return tlsrpt.ResultCertificateHostMismatch
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return tlsrpt.ResultCertificateExpired
	default:
		return tlsrpt.ResultCertificateNotTrusted
	}
}

func (s *Security) count(policy, result string) {
	if s.Observe != nil {
		s.Observe(policy, result)
	}
}

func (s *Security) success(k tlsrpt.PolicyKey) {
	if s.Report != nil {
		s.Report.Success(k)
	}
}

func (s *Security) failure(k tlsrpt.PolicyKey, host string, rt tlsrpt.ResultType, why string) {
	if s.Report != nil {
		s.Report.Failure(k, tlsrpt.FailureDetail{ResultType: rt, ReceivingMXHostname: host, AdditionalInformation: why})
	}
}

// Explain says, one line each, where mail for domain goes and under which
// security: its MX hosts, the domain's policy, and each host's TLS (for
// `mailfwd lookup -v`). It asks the DNS and the MTA-STS cache as delivery
// would, but connects nowhere.
func (s *Security) Explain(ctx context.Context, dns DNS, domain string, port int) []string {
	h := &MXHop{Domain: domain, Port: port, DNS: dns, Security: s}
	hosts, secure, err := h.hosts(ctx)
	switch {
	case errors.Is(err, errNullMX):
		return []string{domain + ": null MX (RFC 7505): mail bounces"}
	case errors.Is(err, errNoDomain):
		return []string{domain + ": no such domain: mail bounces"}
	case err != nil:
		return []string{domain + ": " + err.Error() + ": mail waits"}
	}
	dnssec := "not DNSSEC-signed"
	if secure {
		dnssec = "DNSSEC-signed"
	}
	out := []string{fmt.Sprintf("%s: MX %s (%s)", domain, strings.Join(hosts, ", "), dnssec)}
	dp := s.ForDomain(ctx, domain)
	out = append(out, "  policy: "+dp.String())
	for _, host := range hosts {
		if dp.Enforced() && !dp.STS.Policy.MatchMX(host) {
			out = append(out, fmt.Sprintf("  %s: not used: not listed in the MTA-STS policy", host))
			continue
		}
		addrs, ht, err := h.prepareHost(ctx, dns, dp, host, secure)
		switch {
		case err != nil:
			out = append(out, fmt.Sprintf("  %s: not used now: %v", host, err))
		case ht == nil:
			out = append(out, fmt.Sprintf("  %s: %v: the default TLS policy (opportunistic unless tls_policy says otherwise)", host, addrs.Addrs))
		default:
			out = append(out, fmt.Sprintf("  %s: %v: %s", host, addrs.Addrs, ht.Label))
		}
	}
	return out
}
