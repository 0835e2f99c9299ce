package resolve

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestQueryHasEDNS0AndDO(t *testing.T) {
	srv := startServer(t, zone{
		"example. MX": {answer: rrs(t, "example. 300 IN MX 10 mx.example.")},
	}.handle)
	r, _ := newResolver(srv.addr)
	if _, err := r.LookupMX(context.Background(), "example"); err != nil {
		t.Fatal(err)
	}
	q := srv.lastQuery()
	opt := q.IsEdns0()
	if opt == nil {
		t.Fatal("query without EDNS0")
	}
	if !opt.Do() || opt.UDPSize() != 1232 {
		t.Errorf("EDNS0 DO=%v size=%d, want DO and 1232", opt.Do(), opt.UDPSize())
	}
	if !q.RecursionDesired || !q.AuthenticatedData {
		t.Errorf("RD=%v AD=%v, want both", q.RecursionDesired, q.AuthenticatedData)
	}
}

func TestResponseCodes(t *testing.T) {
	tests := []struct {
		name  string
		spec  spec
		want  error
		rcode int
	}{
		{"noerror", spec{answer: rrs(t, "q.example. 60 IN MX 0 mx.example.")}, nil, 0},
		{"nodata", spec{ns: soa(t, 60, 60)}, nil, 0},
		{"nxdomain", spec{rcode: dns.RcodeNameError, ns: soa(t, 60, 60)}, ErrNotFound, dns.RcodeNameError},
		{"servfail", spec{rcode: dns.RcodeServerFailure}, ErrTemporary, dns.RcodeServerFailure},
		{"refused", spec{rcode: dns.RcodeRefused}, ErrTemporary, dns.RcodeRefused},
		{"formerr", spec{rcode: dns.RcodeFormatError}, ErrTemporary, dns.RcodeFormatError},
		{"notimp", spec{rcode: dns.RcodeNotImplemented}, ErrTemporary, dns.RcodeNotImplemented},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, zone{"q.example. MX": tt.spec}.handle)
			r, _ := newResolver(srv.addr)
			res, err := r.LookupMX(context.Background(), "q.example")
			wantClass(t, err, tt.want)
			if err == nil {
				if tt.spec.answer == nil && len(res.Records) != 0 {
					t.Errorf("nodata gave records %v", res.Records)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T, want *Error", err)
			}
			if e.Rcode != tt.rcode || e.Name != "q.example" || e.Type != "MX" {
				t.Errorf("Error %+v, want rcode %d for MX q.example", e, tt.rcode)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	r, _ := newResolver(deadServer(t))
	r.Timeout = 100 * time.Millisecond
	start := time.Now()
	_, err := r.LookupMX(context.Background(), "example")
	wantClass(t, err, ErrTemporary)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v with a 100 ms timeout", d)
	}
}

func TestContext(t *testing.T) {
	t.Run("deadline", func(t *testing.T) {
		r, _ := newResolver(deadServer(t))
		r.Timeout = 5 * time.Second
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := r.LookupAddrs(ctx, "host.example")
		wantClass(t, err, ErrTemporary)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v, want it to wrap context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("took %v with a 100 ms deadline", d)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		srv := startServer(t, zone{}.handle)
		r, _ := newResolver(srv.addr)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := r.LookupTXT(ctx, "_mta-sts.example")
		wantClass(t, err, ErrTemporary)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error %v, want it to wrap context.Canceled", err)
		}
		if n := srv.total(); n != 0 {
			t.Errorf("%d queries sent for a cancelled context", n)
		}
	})
}

func TestTruncationFallsBackToTCP(t *testing.T) {
	var answer []string
	for i := range 100 {
		answer = append(answer, fmt.Sprintf("big.example. 300 IN A 10.0.%d.%d", i/256, i%256))
	}
	full := rrs(t, answer...)
	srv := startServer(t, func(q *dns.Msg, network string) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Answer = full
		if network == "udp" {
			m.Truncate(ednsSize) // drops records and sets TC
		}
		return m
	})
	r, _ := newResolver(srv.addr)
	res, err := r.LookupAddrs(context.Background(), "big.example")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Addrs) != 100 {
		t.Errorf("%d addresses, want all 100", len(res.Addrs))
	}
	if u, c := srv.network("udp"), srv.network("tcp"); u != 1 || c != 1 {
		t.Errorf("%d UDP and %d TCP queries, want 1 and 1", u, c)
	}
}

func TestFailover(t *testing.T) {
	good := zone{
		"a.example. A": {answer: rrs(t, "a.example. 300 IN A 192.0.2.1")},
		"b.example. A": {answer: rrs(t, "b.example. 300 IN A 192.0.2.2")},
	}
	servfail := func(q *dns.Msg, _ string) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeServerFailure)
		return m
	}
	refused := func(q *dns.Msg, _ string) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeRefused)
		return m
	}
	tests := []struct {
		name  string
		first func(t *testing.T) (addr string, count func() int)
	}{
		{"timeout", func(t *testing.T) (string, func() int) { return deadServer(t), nil }},
		{"unreachable", func(t *testing.T) (string, func() int) { return closedPort(t), nil }},
		{"servfail", func(t *testing.T) (string, func() int) {
			s := startServer(t, servfail)
			return s.addr, s.total
		}},
		{"refused", func(t *testing.T) (string, func() int) {
			s := startServer(t, refused)
			return s.addr, s.total
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, firstCount := tt.first(t)
			second := startServer(t, good.handle)
			r, _ := newResolver(first, second.addr)
			r.Timeout = 100 * time.Millisecond
			res, err := r.LookupAddrs(context.Background(), "a.example")
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Addrs) != 1 || res.Addrs[0].String() != "192.0.2.1" {
				t.Errorf("addresses %v", res.Addrs)
			}
			// The server that answered is asked first from now on.
			start := time.Now()
			if _, err := r.LookupAddrs(context.Background(), "b.example"); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d >= r.Timeout {
				t.Errorf("second lookup took %v: asked the failed server again?", d)
			}
			if firstCount != nil && firstCount() != 1 {
				t.Errorf("first server got %d queries, want 1", firstCount())
			}
			if n := second.total(); n != 2 {
				t.Errorf("second server got %d queries, want 2", n)
			}
		})
	}
}

func TestAttempts(t *testing.T) {
	var servers []*testServer
	var addrs []string
	for range 2 {
		s := startServer(t, zone{}.handle) // REFUSED to everything
		servers = append(servers, s)
		addrs = append(addrs, s.addr)
	}
	r, _ := newResolver(addrs...)
	r.Attempts = 3
	_, err := r.LookupMX(context.Background(), "example")
	wantClass(t, err, ErrTemporary)
	for i, s := range servers {
		if n := s.total(); n != 3 {
			t.Errorf("server %d got %d queries, want 3 (one per attempt)", i, n)
		}
	}
}

func TestResolvConf(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// fields are the Resolver's settings under test (a Resolver holds
	// locks and must not be copied).
	type fields struct {
		Servers  []string
		Timeout  time.Duration
		Attempts int
	}
	tests := []struct {
		name     string
		path     string
		r        fields
		servers  []string
		timeout  time.Duration
		attempts int
		wantErr  bool
	}{
		{
			name:    "servers and options",
			path:    write("full", "search example.org\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions timeout:1 attempts:3\n"),
			servers: []string{"192.0.2.53:53", "[2001:db8::53]:53"}, timeout: time.Second, attempts: 3,
		},
		{
			name:    "fields win over file",
			path:    write("opts", "nameserver 192.0.2.53\noptions timeout:1 attempts:3\n"),
			r:       fields{Timeout: 2 * time.Second, Attempts: 1},
			servers: []string{"192.0.2.53:53"}, timeout: 2 * time.Second, attempts: 1,
		},
		{
			name:    "no nameserver means localhost",
			path:    write("empty", "# nothing\n"),
			servers: []string{"127.0.0.1:53", "[::1]:53"}, timeout: 5 * time.Second, attempts: 2,
		},
		{name: "missing file", path: filepath.Join(dir, "missing"), wantErr: true},
		{
			name:    "explicit servers skip the file",
			path:    filepath.Join(dir, "missing"),
			r:       fields{Servers: []string{"192.0.2.1", "192.0.2.2:5353", "2001:db8::1"}},
			servers: []string{"192.0.2.1:53", "192.0.2.2:5353", "[2001:db8::1]:53"}, timeout: 5 * time.Second, attempts: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Resolver{Servers: tt.r.Servers, Timeout: tt.r.Timeout, Attempts: tt.r.Attempts, ResolvConf: tt.path}
			c, err := r.config()
			if tt.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				_, err := r.LookupMX(context.Background(), "example")
				wantClass(t, err, ErrTemporary)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.servers, tt.servers) || c.timeout != tt.timeout || c.attempts != tt.attempts {
				t.Errorf("config %v %v %d, want %v %v %d", c.servers, c.timeout, c.attempts, tt.servers, tt.timeout, tt.attempts)
			}
		})
	}
}
