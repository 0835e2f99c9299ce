package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"mailfwd/config"
	"mailfwd/queue/nexthop"
	"mailfwd/queue/nexthop/mtasts"
	"mailfwd/queue/nexthop/resolve"
	"mailfwd/queue/nexthop/tlsrpt"
)

// newDNS is delivery's resolver: dns.servers, else /etc/resolv.conf.
func newDNS(c *config.Config) *resolve.Resolver {
	return &resolve.Resolver{Servers: c.DNS.Servers}
}

// deliveryDNS is r as MX delivery asks it: with dns.dnssec off, the AD
// bit is hidden, so no answer is secure and DANE never applies.
func deliveryDNS(c *config.Config, r *resolve.Resolver) nexthop.DNS {
	if !c.DNS.DNSSEC {
		return dnssecDNS{r}
	}
	return r
}

// ourDomains tells whether a domain is ours (relay_domains, local_domains):
// mail to it is not an external forward.
func ourDomains(c *config.Config) func(domain string) bool {
	ours := map[string]bool{}
	for _, d := range append(append([]string(nil), c.RelayDomains...), c.LocalDomains...) {
		ours[strings.ToLower(d)] = true
	}
	return func(domain string) bool { return ours[strings.ToLower(domain)] }
}

type dnssecDNS struct{ nexthop.DNS }

func (d dnssecDNS) LookupMX(ctx context.Context, domain string) (resolve.MXResult, error) {
	r, err := d.DNS.LookupMX(ctx, domain)
	r.Secure = false
	return r, err
}

// newSecurity is MX delivery's DANE and MTA-STS (nexthop/security.go) as
// the config sets them; the MTA-STS policies are cached in the spool
// directory, so they outlive restarts.
func newSecurity(c *config.Config, roots *x509.CertPool, dns *resolve.Resolver, log *slog.Logger, report bool) (*nexthop.Security, error) {
	d := c.Delivery
	s := &nexthop.Security{DANE: d.DANE && c.DNS.DNSSEC, RootCAs: roots,
		Override: func(domain string) (string, bool) {
			p, ok := d.TLSPolicies[strings.ToLower(domain)]
			return tlsPolicy[p], ok
		}}
	if metrics != nil {
		s.Observe = metrics.ObserveOutboundTLS
	}
	if d.MTASTS {
		client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			DialContext:     dialVia(dns),
		}}
		cache, err := mtasts.New(mtasts.Options{
			LookupTXT: func(ctx context.Context, name string) ([]string, error) {
				r, err := dns.LookupTXT(ctx, name)
				if errors.Is(err, resolve.ErrNotFound) {
					return nil, fmt.Errorf("%w: %w", mtasts.ErrNoRecord, err)
				}
				return r.Records, err
			},
			Client: client, Path: filepath.Join(c.Path(c.SpoolDir), "mta-sts.json"),
			Logf: func(f string, a ...any) { log.Warn(fmt.Sprintf("mta-sts: "+f, a...)) },
		})
		if err != nil {
			return nil, fmt.Errorf("delivery.mta_sts: %w", err)
		}
		s.STS = cache
	}
	if d.TLSRPT.Enabled && report {
		rec, err := tlsrpt.OpenRecorder(tlsrpt.RecorderOptions{Path: filepath.Join(c.Path(c.SpoolDir), "tlsrpt.json")})
		if err != nil {
			return nil, fmt.Errorf("delivery.tls_rpt: %w", err)
		}
		s.Report = rec
	}
	return s, nil
}

// dialVia dials host:port with host resolved by dns (dns.servers), not the
// system's resolver: policy hosts are looked up where delivery looks.
func dialVia(dns *resolve.Resolver) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 30 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		a, err := dns.LookupAddrs(ctx, host)
		if err != nil {
			return nil, err
		}
		if len(a.Addrs) == 0 {
			return nil, fmt.Errorf("%s has no address", host)
		}
		var errs []error
		for _, ip := range a.Addrs {
			c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
		}
		return nil, errors.Join(errs...)
	}
}

// txtForReports is the TLS-RPT reporter's view of our resolver.
type txtForReports struct{ dns *resolve.Resolver }

func (t txtForReports) LookupTXT(ctx context.Context, name string) ([]string, error) {
	r, err := t.dns.LookupTXT(ctx, name)
	if errors.Is(err, resolve.ErrNotFound) {
		return nil, &net.DNSError{Err: err.Error(), Name: name, IsNotFound: true}
	}
	return r.Records, err
}

// newReporter sends the daily TLS reports of rec: mailto: through our own
// queue (inject), https: POSTed.
func newReporter(c *config.Config, rec *tlsrpt.Recorder, dns *resolve.Resolver, roots *x509.CertPool,
	inject func(ctx context.Context, from, to string, msg []byte) error, log *slog.Logger) (*tlsrpt.Reporter, error) {
	r := c.Delivery.TLSRPT
	return tlsrpt.NewReporter(tlsrpt.Config{
		Recorder: rec,
		Info:     tlsrpt.ReportInfo{OrganizationName: r.Organization, ContactInfo: r.Contact, Submitter: c.Hostname},
		Resolver: txtForReports{dns},
		SendMail: inject,
		HTTPClient: &http.Client{Timeout: time.Minute, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, DialContext: dialVia(dns)}},
		Logf: func(f string, a ...any) { log.Info(fmt.Sprintf("tls-rpt: "+f, a...)) },
	})
}

// outboundExplainer tells, for `mailfwd lookup -v`, how a final recipient
// outside our domains would be delivered: its MX hosts and the security
// that applies to each (nexthop.Security.Explain).
func outboundExplainer(c *config.Config, log *slog.Logger) (func(ctx context.Context, rcpt string) []string, error) {
	roots, err := deliveryRoots(c)
	if err != nil {
		return nil, err
	}
	dns := newDNS(c)
	sec, err := newSecurity(c, roots, dns, log, false)
	if err != nil {
		return nil, err
	}
	d, ours := deliveryDNS(c, dns), ourDomains(c)
	seen := map[string]bool{}
	return func(ctx context.Context, rcpt string) []string {
		i := strings.LastIndexByte(rcpt, '@')
		if i < 0 {
			return nil
		}
		domain := strings.ToLower(rcpt[i+1:])
		if ours(domain) || seen[domain] {
			return nil
		}
		seen[domain] = true
		return sec.Explain(ctx, d, domain, c.Delivery.MXPort)
	}, nil
}
