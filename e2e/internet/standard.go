//go:build e2e

package internet

import "testing"

// Domain is one mail domain of the standard scenario.
type Domain struct {
	Name string // the mail domain, e.g. "dane.test"
	Rcpt string // an address there that the MX accepts: "rcpt@<Name>"
	Zone *Zone  // the zone holding the domain (and its MX's name)
	MX   *MX    // the MX that receives its mail; nil for the null MX
	// STS is the MTA-STS policy URL, "" without MTA-STS.
	STS string
	// TLSRPT lists the rua URIs of its _smtp._tls TXT record (nil: none).
	TLSRPT []string
}

// Scenario is the standard Internet of Standard: one domain per case.
type Scenario struct {
	*Net

	// 1. Signed zone dane.test; MX 10 mx.dane.test, suite-CA cert,
	// _25._tcp.mx.dane.test TLSA 3 1 1 matching it. TLS-RPT: https.
	DANE Domain
	// 2. Signed zone dane-mismatch.test; MX 10 mx.dane-mismatch.test,
	// suite-CA cert (so PKIX alone would pass), TLSA 3 1 1 of another key.
	// TLS-RPT: mailto.
	DANEMismatch Domain
	// 3. Unsigned sts-enforce.test; MTA-STS mode enforce, mx:
	// mx.sts-enforce.test, whose cert is suite-CA, right name. TLS-RPT: https.
	STSEnforce Domain
	// 4. Unsigned sts-badcert.test; MTA-STS enforce, mx: mx.sts-badcert.test,
	// whose cert is suite-CA but for WrongName only. TLS-RPT: https and mailto.
	STSEnforceBadCert Domain
	// 5. Unsigned sts-testing.test; MTA-STS testing, mx: mx.sts-testing.test,
	// whose cert is self-signed. TLS-RPT: https.
	STSTesting Domain
	// 6. Unsigned notls.test; MX mx.notls.test offers no STARTTLS; no
	// MTA-STS, no TLSA, no TLS-RPT.
	NoTLS Domain
	// 7. Unsigned nullmx.test: "MX 0 ." and nothing else (no A).
	NullMX Domain
	// 8. Unsigned backup.test: MX 10 mx1.backup.test (BackupDown: a host
	// where nothing listens, connections are refused at once) and MX 20
	// mx2.backup.test (suite-CA cert), which is Backup.MX.
	Backup     Domain
	BackupDown *Host
	// 9. Bogus zone bogus.test (its DS in test. matches no key): every
	// answer is SERVFAIL. Behind it: MX 10 mx.bogus.test, a working MX
	// with a suite-CA cert and a matching TLSA, that must never get mail.
	Bogus Domain

	// TLSRPT is the HTTPS report endpoint (ReportURL); ReportMX
	// (mx.report.test, domain report.test, suite-CA cert) receives the
	// mailto: reports at ReportMailto.
	TLSRPT       *ReportServer
	ReportURL    string // "https://tlsrpt.report.test/v1/tlsrpt"
	ReportMX     *MX
	ReportMailto string // "mailto:tlsrpt@report.test"
}

// Domains lists the nine cases in order.
func (s *Scenario) Domains() []*Domain {
	return []*Domain{&s.DANE, &s.DANEMismatch, &s.STSEnforce, &s.STSEnforceBadCert, &s.STSTesting,
		&s.NoTLS, &s.NullMX, &s.Backup, &s.Bogus}
}

// Standard builds and starts the standard Internet (New(t, nil), the
// nine cases of Scenario, Start). It takes a few seconds.
func Standard(t testing.TB) *Scenario {
	t.Helper()
	n := New(t, nil)
	s := &Scenario{Net: n}
	s.TLSRPT = n.TLSRPT()
	s.ReportURL = s.TLSRPT.URL
	s.ReportMailto = "mailto:tlsrpt@report.test"
	s.ReportMX = n.AddMX("mx.report.test", MXOptions{})
	n.AddMXRecord("report.test", 10, "mx.report.test")

	dom := func(d *Domain, name string, kind ZoneKind) {
		d.Name, d.Rcpt = name, "rcpt@"+name
		d.Zone = n.AddZone(name, kind)
	}
	mx := func(d *Domain, opts MXOptions) {
		d.MX = n.AddMX("mx."+d.Name, opts)
		n.AddMXRecord(d.Name, 10, d.MX.Name)
	}
	rpt := func(d *Domain, rua ...string) {
		d.TLSRPT = rua
		n.AddTLSRPT(d.Name, rua...)
	}
	sts := func(d *Domain, mode string) {
		d.STS = n.AddMTASTS(d.Name, STSPolicy{Mode: mode, MX: []string{d.MX.Name}, MaxAge: 86400})
	}

	dom(&s.DANE, "dane.test", Signed)
	mx(&s.DANE, MXOptions{TLSA: TLSAMatch})
	rpt(&s.DANE, s.ReportURL)

	dom(&s.DANEMismatch, "dane-mismatch.test", Signed)
	mx(&s.DANEMismatch, MXOptions{TLSA: TLSAMismatch})
	rpt(&s.DANEMismatch, s.ReportMailto)

	dom(&s.STSEnforce, "sts-enforce.test", Unsigned)
	mx(&s.STSEnforce, MXOptions{})
	sts(&s.STSEnforce, "enforce")
	rpt(&s.STSEnforce, s.ReportURL)

	dom(&s.STSEnforceBadCert, "sts-badcert.test", Unsigned)
	mx(&s.STSEnforceBadCert, MXOptions{Cert: CertWrongName})
	sts(&s.STSEnforceBadCert, "enforce")
	rpt(&s.STSEnforceBadCert, s.ReportURL, s.ReportMailto)

	dom(&s.STSTesting, "sts-testing.test", Unsigned)
	mx(&s.STSTesting, MXOptions{Cert: CertSelfSigned})
	sts(&s.STSTesting, "testing")
	rpt(&s.STSTesting, s.ReportURL)

	dom(&s.NoTLS, "notls.test", Unsigned)
	mx(&s.NoTLS, MXOptions{TLS: TLSOff})

	dom(&s.NullMX, "nullmx.test", Unsigned)
	n.AddMXRecord(s.NullMX.Name, 0, ".")

	dom(&s.Backup, "backup.test", Unsigned)
	s.BackupDown = n.AddHost("down")
	n.AddA("mx1.backup.test", s.BackupDown.Addr)
	n.AddMXRecord(s.Backup.Name, 10, "mx1.backup.test")
	s.Backup.MX = n.AddMX("mx2.backup.test", MXOptions{})
	n.AddMXRecord(s.Backup.Name, 20, "mx2.backup.test")

	dom(&s.Bogus, "bogus.test", Bogus)
	mx(&s.Bogus, MXOptions{TLSA: TLSAMatch})

	n.Start()
	return s
}
