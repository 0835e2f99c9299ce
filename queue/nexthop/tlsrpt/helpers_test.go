package tlsrpt

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(s string) *clock {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return &clock{t: t}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(s string) {
	t := newClock(s).t
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// resolver answers TXT lookups from a map; a missing name is NXDOMAIN,
// an entry in fail a temporary error.
type resolver struct {
	mu   sync.Mutex
	txt  map[string][]string
	fail map[string]bool
}

func (r *resolver) LookupTXT(_ context.Context, name string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail[name] {
		return nil, &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
	}
	txt, ok := r.txt[name]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	return txt, nil
}

var (
	stsPolicy = PolicyKey{
		Type:   PolicySTS,
		String: []string{"version: STSv1", "mode: testing", "mx: *.mail.company-y.example", "max_age: 86400"},
		Domain: "company-y.example",
		MXHost: []string{"*.mail.company-y.example"},
	}
	tlsaPolicy = PolicyKey{
		Type:   PolicyTLSA,
		String: []string{"_25._tcp.mx.dane.example. IN TLSA 3 1 1 1F850A337E6DB9C609C522D136A475638CC43E1ED424F8EEC8513D747D1D085D"},
		Domain: "dane.example",
		MXHost: []string{"mx.dane.example"},
	}
	noPolicy = PolicyKey{Type: PolicyNoPolicyFound, Domain: "plain.example"}
)

// testInfo gives fixed report ids so goldens do not depend on the
// default format.
var testInfo = ReportInfo{
	OrganizationName: "Company-X",
	ContactInfo:      "sts-reporting@company-x.example",
	Submitter:        "mail.company-x.example",
	ReportID: func(day time.Time, domain string) string {
		return "5065427c-23d3-47ca-b6e0-946ea0e8c4be." + domain
	},
}

// fillDay records a fixed mix of sessions, modelled on the RFC 8460
// appendix example.
func fillDay(r *Recorder) {
	for range 53 {
		r.Success(stsPolicy)
	}
	for range 10 {
		r.Failure(stsPolicy, FailureDetail{
			ResultType:          ResultCertificateExpired,
			SendingMTAIP:        "2001:db8:abcd:0012::1",
			ReceivingMXHostname: "mx1.mail.company-y.example.",
		})
	}
	for range 20 {
		r.Failure(stsPolicy, FailureDetail{
			ResultType:            ResultSTARTTLSNotSupported,
			SendingMTAIP:          "2001:db8:abcd:0013::1",
			ReceivingMXHostname:   "MX2.mail.company-y.example",
			ReceivingIP:           "::ffff:203.0.113.56",
			AdditionalInformation: "https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported",
		})
	}
	for range 3 {
		r.Failure(stsPolicy, FailureDetail{
			ResultType:          ResultValidationFailure,
			SendingMTAIP:        "198.51.100.62",
			ReceivingMXHostname: "mx3.mail.company-y.example",
			ReceivingIP:         "198.51.100.62",
			ReceivingMXHelo:     "mx3.mail.company-y.example",
			FailureReasonCode:   "X509_V_ERR_PROOF_OF_POLICY_NOT_MET",
		})
	}
	// The policy changed during the day: a second policies[] entry.
	p2 := stsPolicy
	p2.String = []string{"version: STSv1", "mode: enforce", "mx: *.mail.company-y.example", "max_age: 86400"}
	r.Success(p2)
	r.Failure(p2, FailureDetail{ResultType: ResultSTSWebPKIInvalid})

	for range 7 {
		r.Success(tlsaPolicy)
	}
	r.Failure(tlsaPolicy, FailureDetail{
		ResultType:          ResultTLSAInvalid,
		SendingMTAIP:        "192.0.2.1",
		ReceivingMXHostname: "mx.dane.example",
		ReceivingIP:         "192.0.2.25",
	})
	r.Success(noPolicy)
	r.Failure(noPolicy, FailureDetail{
		ResultType:          ResultSTARTTLSNotSupported,
		SendingMTAIP:        "192.0.2.1",
		ReceivingMXHostname: "mx.plain.example",
		ReceivingIP:         "192.0.2.26",
	})
}

func openRecorder(t *testing.T, opts RecorderOptions) *Recorder {
	t.Helper()
	r, err := OpenRecorder(opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
