package resolve

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testServer is an in-process DNS server on 127.0.0.1, UDP and TCP on the
// same random port, that counts the queries it gets.
type testServer struct {
	addr string

	mu      sync.Mutex
	queries map[string]int // "name. TYPE" → count, both transports
	nets    map[string]int // "udp"/"tcp" → count
	last    *dns.Msg       // the last query received
}

// handlerFunc answers a query that arrived over network ("udp" or "tcp");
// nil means no answer at all.
type handlerFunc func(q *dns.Msg, network string) *dns.Msg

func startServer(t *testing.T, h handlerFunc) *testServer {
	t.Helper()
	var pc net.PacketConn
	var ln net.Listener
	for i := 0; ; i++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			break
		}
		pc.Close()
		if i == 10 {
			t.Fatal(err)
		}
	}
	s := &testServer{addr: pc.LocalAddr().String(), queries: map[string]int{}, nets: map[string]int{}}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		network := w.LocalAddr().Network()
		s.mu.Lock()
		if len(q.Question) == 1 {
			s.queries[key(q.Question[0].Name, q.Question[0].Qtype)]++
		}
		s.nets[network]++
		s.last = q.Copy()
		s.mu.Unlock()
		if m := h(q, network); m != nil {
			w.WriteMsg(m)
		}
	})
	udp := &dns.Server{PacketConn: pc, Handler: handler}
	tcp := &dns.Server{Listener: ln, Handler: handler}
	for _, srv := range []*dns.Server{udp, tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
	}
	t.Cleanup(func() {
		udp.Shutdown()
		tcp.Shutdown()
	})
	return s
}

func key(name string, qtype uint16) string {
	return strings.ToLower(dns.Fqdn(name)) + " " + dns.TypeToString[qtype]
}

// count is how many queries for name/qtype the server received.
func (s *testServer) count(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[key(name, qtype)]
}

func (s *testServer) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.queries {
		n += c
	}
	return n
}

func (s *testServer) network(n string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nets[n]
}

func (s *testServer) lastQuery() *dns.Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// spec is a canned response.
type spec struct {
	rcode  int
	answer []dns.RR
	ns     []dns.RR
	ad     bool
}

// zone answers from canned responses keyed "name. TYPE"; anything else
// is REFUSED, so a test that forgot an entry fails loudly.
type zone map[string]spec

func (z zone) handle(q *dns.Msg, _ string) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(q)
	sp, ok := z[key(q.Question[0].Name, q.Question[0].Qtype)]
	if !ok {
		m.Rcode = dns.RcodeRefused
		return m
	}
	m.Rcode = sp.rcode
	m.AuthenticatedData = sp.ad
	m.Answer = append(m.Answer, sp.answer...)
	m.Ns = append(m.Ns, sp.ns...)
	if q.IsEdns0() != nil {
		m.SetEdns0(ednsSize, true)
	}
	return m
}

// rrs parses records in zone file syntax.
func rrs(t *testing.T, lines ...string) []dns.RR {
	t.Helper()
	var out []dns.RR
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil {
			t.Fatalf("parsing %q: %v", l, err)
		}
		out = append(out, rr)
	}
	return out
}

// soa is an SOA for negative answers with the given TTL and minimum.
func soa(t *testing.T, ttl, minimum int) []dns.RR {
	return rrs(t, "example. "+strconv.Itoa(ttl)+" IN SOA ns.example. hostmaster.example. 1 3600 600 86400 "+strconv.Itoa(minimum))
}

// fakeClock is the injectable clock of the cache.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newResolver is a Resolver on the given servers with a fake clock, short
// timeouts, one attempt and no AAAA (tests that want AAAA turn it on).
func newResolver(servers ...string) (*Resolver, *fakeClock) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	r := &Resolver{Servers: servers, Timeout: 300 * time.Millisecond, Attempts: 1, IPv6: IPv6Off}
	r.now = clk.now
	return r, clk
}

// deadServer is a UDP socket that takes queries and never answers.
func deadServer(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

// closedPort is a UDP address where nothing listens: queries get ICMP
// port unreachable at once.
func closedPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// wantClass checks the error class: nil, ErrNotFound or ErrTemporary.
func wantClass(t *testing.T, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("error %v, want none", err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("error %v, want %v", err, want)
	case want == ErrNotFound && errors.Is(err, ErrTemporary), want == ErrTemporary && errors.Is(err, ErrNotFound):
		t.Fatalf("error %v is both classes", err)
	}
}
