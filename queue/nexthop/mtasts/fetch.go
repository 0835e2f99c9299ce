package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
)

// The kinds of FetchError, named after the TLS-RPT result types
// (RFC 8460 §4.3.2.2) a report would give them.
var (
	// ErrFetch: the policy host could not be reached or did not answer
	// 200 text/plain (sts-policy-fetch-error).
	ErrFetch = errors.New("policy fetch failed")
	// ErrWebPKI: the policy host's certificate is not valid for
	// mta-sts.DOMAIN under the client's roots (sts-webpki-invalid).
	ErrWebPKI = errors.New("policy host certificate invalid")
	// ErrInvalidPolicy (policy.go) is the third kind: the body did not
	// parse (sts-policy-invalid).
)

// FetchError is what Fetch returns on failure. It unwraps to its Kind
// (ErrFetch, ErrWebPKI or ErrInvalidPolicy) and to its cause.
type FetchError struct {
	Domain string
	Kind   error
	Err    error
}

func (e *FetchError) Error() string {
	return "mta-sts: fetching policy of " + e.Domain + ": " + e.Err.Error()
}

func (e *FetchError) Unwrap() []error { return []error{e.Kind, e.Err} }

// ResultType is the TLS-RPT result type of the failure.
func (e *FetchError) ResultType() string {
	switch e.Kind {
	case ErrWebPKI:
		return "sts-webpki-invalid"
	case ErrInvalidPolicy:
		return "sts-policy-invalid"
	default:
		return "sts-policy-fetch-error"
	}
}

// PolicyURL is where the policy of domain lives (RFC 8461 §3.2).
func PolicyURL(domain string) string {
	return "https://mta-sts." + domain + "/.well-known/mta-sts.txt"
}

// Fetch gets and parses the policy of domain (an A-label name without
// trailing dot) from PolicyURL, with client's transport: its root CAs,
// dialer and proxy are the caller's business (nil means a default
// client: system roots, environment proxy). Whatever client says,
// redirects are not followed (RFC 8461 §3.3) and the connection must have
// been verified by the standard WebPKI verification with a certificate
// valid for mta-sts.DOMAIN; a transport that skips verification fails
// every fetch. Only 200 with Content-Type text/plain is accepted, and a
// body of at most MaxPolicySize. The time allowed is ctx's.
func Fetch(ctx context.Context, client *http.Client, domain string) (*Policy, error) {
	fail := func(kind, err error) (*Policy, error) {
		return nil, &FetchError{Domain: domain, Kind: kind, Err: err}
	}
	if err := checkDomain(domain); err != nil {
		return fail(ErrFetch, fmt.Errorf("bad domain %q: %w", truncate(domain), err))
	}
	c := http.Client{} // a copy, to change CheckRedirect without touching the caller's
	if client != nil {
		c = *client
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, PolicyURL(domain), nil)
	if err != nil {
		return fail(ErrFetch, err)
	}
	req.Header.Set("Accept", "text/plain")
	resp, err := c.Do(req)
	if err != nil {
		if isCertError(err) {
			return fail(ErrWebPKI, err)
		}
		return fail(ErrFetch, err)
	}
	defer resp.Body.Close()

	host := "mta-sts." + domain
	if resp.TLS == nil || len(resp.TLS.VerifiedChains) == 0 {
		return fail(ErrWebPKI, errors.New("connection not verified (does the transport skip verification?)"))
	}
	// The transport verified against its ServerName, which a caller's
	// TLS config may have set to something else.
	if err := resp.TLS.PeerCertificates[0].VerifyHostname(host); err != nil {
		return fail(ErrWebPKI, err)
	}
	if resp.StatusCode != http.StatusOK {
		// A 3xx lands here too, never followed.
		return fail(ErrFetch, fmt.Errorf("HTTP status %s", resp.Status))
	}
	ct := resp.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "text/plain" {
		return fail(ErrFetch, fmt.Errorf("content type %q, want text/plain", truncate(ct)))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxPolicySize+1))
	if err != nil {
		return fail(ErrFetch, fmt.Errorf("reading body: %w", err))
	}
	if len(body) > MaxPolicySize {
		return fail(ErrInvalidPolicy, fmt.Errorf("body larger than %d bytes", MaxPolicySize))
	}
	p, err := ParsePolicy(body)
	if err != nil {
		return fail(ErrInvalidPolicy, err)
	}
	return p, nil
}

// isCertError tells a refused certificate from other TLS and network
// failures, for the TLS-RPT result type.
func isCertError(err error) bool {
	var (
		verr *tls.CertificateVerificationError
		herr x509.HostnameError
		uerr x509.UnknownAuthorityError
		ierr x509.CertificateInvalidError
	)
	return errors.As(err, &verr) || errors.As(err, &herr) || errors.As(err, &uerr) || errors.As(err, &ierr)
}
