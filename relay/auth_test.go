package relay

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mailfwd/auth"
	"mailfwd/queue"
	"mailfwd/queue/nexthop"
	"mailfwd/routing"
)

// txtDNS answers TXT records from a map; everything else is NXDOMAIN.
type txtDNS map[string]string

func (d txtDNS) LookupTXT(_ context.Context, name string) ([]string, error) {
	if v, ok := d[strings.TrimSuffix(name, ".")]; ok {
		return []string{v}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}
func (txtDNS) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}
func (txtDNS) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}
func (txtDNS) LookupAddr(_ context.Context, addr string) ([]string, error) {
	return nil, &net.DNSError{Err: "no such host", Name: addr, IsNotFound: true}
}

var authDNS = txtDNS{
	"example.org":        "v=spf1 ip4:127.0.0.1 -all",
	"_dmarc.example.org": "v=DMARC1; p=none",
	"strict.test":        "v=spf1 -all",
	"_dmarc.strict.test": "v=DMARC1; p=reject",
}

// The edge checks run on every message: Authentication-Results arrives at
// the next hop before the message, a forged one claiming our authserv-id
// is gone, the spooled body is the client's bytes; a DMARC p=reject
// failure is refused when the policy says so.
func TestAuthAtTheEdge(t *testing.T) {
	a, err := auth.New(auth.Config{AuthServID: "relay.test", Resolver: authDNS, DMARCReject: auth.Reject, LookupTimeout: time.Second, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sink := &sinkMTA{}
	spool, err := queue.OpenSpool(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	sl := listen(t)
	sinkSrv := smtp.NewServer(sink)
	go sinkSrv.Serve(sl)
	defer sinkSrv.Close()
	hop := &nexthop.SMTPHop{Addr: sl.Addr().String(), LocalName: "relay.test", Timeout: 2 * time.Second}
	sched := delivering(&queue.Scheduler{Spool: spool, Hop: hop, Workers: 2, Retry: queue.Retry{Min: 50 * time.Millisecond, Max: 100 * time.Millisecond}})
	be, err := NewBackend(limited(Config{Hostname: "relay.test", RelayDomains: []string{"company.com"}, Auth: a}),
		&routing.Expander{Source: seedSource(t), Limits: routing.PostfixLimits}, spool, sched.Submit, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sched.Run(ctx); close(done) }()
	defer func() { cancel(); <-done; hop.Close() }()
	l := listen(t)
	srv := be.NewServer()
	go srv.Serve(l)
	defer srv.Close()

	d := dial(t, l.Addr().String())
	d.reply()
	d.cmd("EHLO client.example.org")
	d.cmd("MAIL FROM:<alice@example.org>")
	d.cmd("RCPT TO:<sales@company.com>")
	d.cmd("DATA")
	reply := d.cmd("Authentication-Results: relay.test; spf=pass; dkim=pass; dmarc=pass\r\nFrom: Alice <alice@example.org>\r\nSubject: checked\r\n\r\nbody\r\n.")
	expectPrefix(t, "DATA", reply, "250 2.0.0 Ok: queued as ")
	got := waitSunk(t, sink, 1)[0].data
	i := strings.Index(got, "Authentication-Results: relay.test;")
	if i < 0 || !strings.Contains(got[i:], "spf=pass") || !strings.Contains(got[i:], "dmarc=") {
		t.Fatalf("no Authentication-Results of ours:\n%s", got)
	}
	if strings.Count(got, "Authentication-Results: relay.test;") != 1 || strings.Contains(got, "dkim=pass; dmarc=pass") {
		t.Fatalf("the forged Authentication-Results survived:\n%s", got)
	}

	// p=reject, SPF fails, no DKIM: refused at the end of DATA.
	d.cmd("MAIL FROM:<bob@strict.test>")
	d.cmd("RCPT TO:<sales@company.com>")
	d.cmd("DATA")
	expectPrefix(t, "DMARC p=reject failure", d.cmd("From: bob@strict.test\r\nSubject: spoof\r\n\r\nx\r\n."), "550 5.7.26")
}
