package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mailfwd/deploy"
	"mailfwd/queue"
	"mailfwd/queue/envelope"
	"mailfwd/queue/nexthop"
	"mailfwd/routing"
	"mailfwd/routing/directory"
	"mailfwd/routing/srs"
)

// sinkMTA stands in for Postfix: it records each delivered transaction.
type sinkMTA struct {
	mu   sync.Mutex
	msgs []sunk
	down bool
}

type sunk struct {
	from  string
	rcpts []string
	data  string
}

func (m *sinkMTA) NewSession(*smtp.Conn) (smtp.Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return nil, &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "down"}
	}
	return &sinkSession{m: m}, nil
}

type sinkSession struct {
	m   *sinkMTA
	cur sunk
}

func (s *sinkSession) Reset()        { s.cur = sunk{} }
func (s *sinkSession) Logout() error { return nil }
func (s *sinkSession) Mail(f string, _ *smtp.MailOptions) error {
	s.cur.from = f
	return nil
}
func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.cur.rcpts = append(s.cur.rcpts, to)
	return nil
}
func (s *sinkSession) Data(r io.Reader) error {
	b, _ := io.ReadAll(r)
	s.cur.data = string(b)
	s.m.mu.Lock()
	s.m.msgs = append(s.m.msgs, s.cur)
	s.m.mu.Unlock()
	return nil
}

// delivered counts deliveries per recipient (lower-cased).
func (m *sinkMTA) delivered() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for _, msg := range m.msgs {
		for _, r := range msg.rcpts {
			out[strings.ToLower(r)]++
		}
	}
	return out
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// relayUnderTest is the whole pipeline in one process: relay → spool →
// scheduler → SMTP next hop (sinkMTA), with a routing source of choice.
type relayUnderTest struct {
	addr     string
	spoolDir string
	sink     *sinkMTA
	spool    *queue.Spool
	stop     func()
}

func startRelay(t *testing.T, src routing.Source, spoolDir string, sink *sinkMTA) *relayUnderTest {
	t.Helper()
	return startRelayWith(t, src, spoolDir, sink, nil, nil)
}

// startRelayWith optionally routes external forwards to extSink and
// applies srs.
func startRelayWith(t *testing.T, src routing.Source, spoolDir string, sink, extSink *sinkMTA, rw *srs.Rewriter) *relayUnderTest {
	t.Helper()
	sl := listen(t)
	sinkSrv := smtp.NewServer(sink)
	sinkSrv.Domain = "sink.test"
	go sinkSrv.Serve(sl)
	var extHop *nexthop.SMTPHop
	if extSink != nil {
		el := listen(t)
		extSrv := smtp.NewServer(extSink)
		go extSrv.Serve(el)
		t.Cleanup(func() { extSrv.Close() })
		extHop = &nexthop.SMTPHop{Addr: el.Addr().String(), LocalName: "relay.test", Timeout: 2 * time.Second}
	}

	spool, err := queue.OpenSpool(spoolDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	hop := &nexthop.SMTPHop{Addr: sl.Addr().String(), LocalName: "relay.test", Timeout: 2 * time.Second}
	sched := delivering(&queue.Scheduler{Spool: spool, Hop: hop, Workers: 4, Retry: queue.Retry{Min: 50 * time.Millisecond, Max: 200 * time.Millisecond}})
	if extHop != nil {
		sched.ExternalHop = extHop
	}
	be, err := NewBackend(limited(Config{Hostname: "relay.test", RelayDomains: []string{"domain.com", "domain.ro", "company.com"}, LookupTimeout: time.Second,
		SRS: rw, SRSFailureLimit: 3}), &routing.Expander{Source: src, Limits: routing.PostfixLimits}, spool, sched.Submit, nil)
	if err != nil {
		t.Fatal(err)
	}
	sched.Local = be.Local
	ctx, cancel := context.WithCancel(context.Background())
	schedDone := make(chan struct{})
	go func() { sched.Run(ctx); close(schedDone) }()
	l := listen(t)
	srv := be.NewServer()
	go srv.Serve(l)
	r := &relayUnderTest{addr: l.Addr().String(), spoolDir: spoolDir, sink: sink, spool: spool}
	r.stop = func() {
		srv.Close()
		cancel()
		<-schedDone
		hop.Close()
		sinkSrv.Close()
		spool.Close()
	}
	t.Cleanup(r.stop)
	return r
}

func seedSource(t *testing.T) routing.Source {
	t.Helper()
	s, err := directory.NewLDIFBytes(deploy.SeedLDIF, directory.MailRecipientSchema)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rcptReply opens a session and returns the reply to RCPT TO:<to> ("250" on success).
func rcptReply(t *testing.T, addr, to string) string {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("alice@example.org", &smtp.MailOptions{UTF8: !isASCII(to)}); err != nil {
		t.Fatal(err)
	}
	return replyText(c.Rcpt(to, nil))
}

func replyText(err error) string {
	if err == nil {
		return "250"
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
	}
	return err.Error()
}

// sendMail sends one message and returns the DATA reply text.
func sendMail(t *testing.T, addr string, rcpts ...string) (string, error) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("alice@example.org", nil); err != nil {
		return "", err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return "", fmt.Errorf("RCPT %s: %w", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	fmt.Fprintf(w, "From: alice@example.org\r\nSubject: test\r\n\r\nhello\r\n")
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	return strings.TrimPrefix(resp.StatusText, "2.0.0 "), c.Quit()
}

func waitDelivered(t *testing.T, sink *sinkMTA, want map[string]int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := sink.delivered()
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The README's three scenarios, through the embedded seed directory.
func TestSeedScenarios(t *testing.T) {
	tests := []struct {
		name  string
		rcpts []string
		want  map[string]int
	}{
		{"migration", []string{"old.address@domain.com"}, map[string]int{"new.address@domain.ro": 1}},
		{"external forward", []string{"internal.user@company.com"}, map[string]int{"external.user@gmail.com": 1}},
		{"aliases", []string{"sales@company.com"}, map[string]int{"central@company.com": 1}},
		{"three aliases, one copy", []string{"sales@company.com", "info@company.com", "support@company.com"}, map[string]int{"central@company.com": 1}},
		{"case-insensitive match", []string{"OLD.Address@DOMAIN.com"}, map[string]int{"new.address@domain.ro": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRelay(t, seedSource(t), t.TempDir(), &sinkMTA{})
			reply, err := sendMail(t, r.addr, tt.rcpts...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(reply, "Ok: queued as ") {
				t.Fatalf("DATA reply %q", reply)
			}
			waitDelivered(t, r.sink, tt.want)
			msg := r.sink.msgs[0]
			if msg.from != "alice@example.org" {
				t.Errorf("envelope sender %q", msg.from)
			}
			id := strings.TrimPrefix(reply, "Ok: queued as ")
			if !strings.HasPrefix(msg.data, "Received: from ") || !strings.Contains(msg.data, "id "+id) || !strings.Contains(msg.data, "\r\n\r\nhello\r\n") {
				t.Errorf("delivered message lacks our Received header or body:\n%s", msg.data)
			}
		})
	}
}

type failingSource struct{ err error }

func (f failingSource) Lookup(context.Context, string) ([]routing.Match, error) { return nil, f.err }

type slowSource struct{}

func (slowSource) Lookup(ctx context.Context, _ string) ([]routing.Match, error) {
	<-ctx.Done()
	return nil, fmt.Errorf("%w: %v", routing.ErrUnavailable, ctx.Err())
}

type loopSource struct{}

func (loopSource) Lookup(_ context.Context, a string) ([]routing.Match, error) {
	if strings.HasPrefix(a, "a@") {
		return []routing.Match{{Value: "b@company.com"}}, nil
	}
	return []routing.Match{{Value: "a@company.com"}}, nil
}

type mapSource map[string]string

func (m mapSource) Lookup(_ context.Context, k string) ([]routing.Match, error) {
	if v, ok := m[strings.ToLower(k)]; ok {
		return []routing.Match{{Value: v}}, nil
	}
	return nil, nil
}

// Relay domains compare in A-label form, whichever form the config and the
// client use; a look-alike of a relay domain is not one.
func TestIDNRelayDomains(t *testing.T) {
	spool, err := queue.OpenSpool(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	src := mapSource{"info@bücher.example": "info@bücher.example", "info@xn--bcher-kva.example": "info@xn--bcher-kva.example"}
	be, err := NewBackend(limited(Config{Hostname: "relay.test", RelayDomains: []string{"Bücher.Example"}}),
		&routing.Expander{Source: src, Limits: routing.PostfixLimits}, spool, func(*envelope.Envelope) {}, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := listen(t)
	srv := be.NewServer()
	go srv.Serve(l)
	defer srv.Close()
	for to, want := range map[string]string{
		"info@bücher.example":         "250",
		"info@xn--bcher-kva.example":  "250",
		"info@BÜCHER.example":         "250",
		"info@bucher.example":         "554 5.7.1",
		"info@xn--bcher-kva.example.": "501 5.1.3",
	} {
		if got := rcptReply(t, l.Addr().String(), to); !strings.HasPrefix(got, want) {
			t.Errorf("RCPT TO:<%s> = %q, want %q", to, got, want)
		}
	}
}

func TestRcptReplies(t *testing.T) {
	tests := []struct {
		name string
		src  routing.Source
		to   string
		want string
	}{
		{"known", seedSource(t), "sales@company.com", "250"},
		{"unknown user", seedSource(t), "nobody@company.com", "550 5.1.1"},
		{"not a relay domain", seedSource(t), "external.user@gmail.com", "554 5.7.1"},
		{"relay domain look-alike", seedSource(t), "sales@company.com.evil.test", "554 5.7.1"},
		{"trailing dot", seedSource(t), "sales@company.com.", "501 5.1.3"},
		{"directory down", failingSource{fmt.Errorf("%w: connection refused", routing.ErrUnavailable)}, "sales@company.com", "451 4.3.0"},
		{"directory odd error", failingSource{errors.New("protocol error")}, "sales@company.com", "451 4.3.0"},
		{"directory timeout", slowSource{}, "sales@company.com", "451 4.3.0"},
		{"alias loop", loopSource{}, "a@company.com", "451 4.6.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRelay(t, tt.src, t.TempDir(), &sinkMTA{})
			if got := rcptReply(t, r.addr, tt.to); !strings.HasPrefix(got, tt.want) {
				t.Fatalf("RCPT TO:<%s> got %q, want %q", tt.to, got, tt.want)
			}
		})
	}
}

// The 250 comes after the message is in the spool: at the moment the client
// has its reply, the envelope and body are on disk, whatever delivery does.
func TestQueuedBeforeReply(t *testing.T) {
	sink := &sinkMTA{down: true}
	r := startRelay(t, seedSource(t), t.TempDir(), sink)
	reply, err := sendMail(t, r.addr, "sales@company.com")
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimPrefix(reply, "Ok: queued as ")
	env, err := r.spool.Load(id)
	if err != nil {
		t.Fatalf("message %s not in spool after 250: %v", id, err)
	}
	if env.Recipients[0].Addr != "central@company.com" || env.Recipients[0].OrigTo != "sales@company.com" {
		t.Fatalf("spooled recipients %+v", env.Recipients)
	}
	if _, err := r.spool.OpenBody(env); err != nil {
		t.Fatal(err)
	}
}

// Next hop down: messages wait in the spool and arrive once it is back;
// and a relay restarted on the same spool delivers what the previous one
// accepted.
func TestNextHopDownThenUpAndRestart(t *testing.T) {
	spoolDir := filepath.Join(t.TempDir(), "spool")
	sink := &sinkMTA{down: true}
	r := startRelay(t, seedSource(t), spoolDir, sink)
	for _, to := range []string{"old.address@domain.com", "internal.user@company.com"} {
		if _, err := sendMail(t, r.addr, to); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(150 * time.Millisecond) // a few failed attempts
	if envs, _ := r.spool.List(); len(envs) != 2 {
		t.Fatalf("%d messages in spool while next hop is down, want 2", len(envs))
	}
	r.stop()

	sink2 := &sinkMTA{}
	startRelay(t, seedSource(t), spoolDir, sink2)
	waitDelivered(t, sink2, map[string]int{"new.address@domain.ro": 1, "external.user@gmail.com": 1})
}
