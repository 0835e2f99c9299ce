package relay

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mailfwd/deploy"
	"mailfwd/queue"
	"mailfwd/queue/envelope"
	"mailfwd/routing"
	"mailfwd/routing/directory"
)

// countingObserver records what an Observer hears.
type countingObserver struct {
	mu                 sync.Mutex
	accepted, rejected int
	disconnects        int
	rcpts              map[int]int
	queued, notQueued  int
}

func (o *countingObserver) Connection(accepted bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if accepted {
		o.accepted++
	} else {
		o.rejected++
	}
}

func (o *countingObserver) Disconnect() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.disconnects++
}

func (o *countingObserver) Rcpt(code int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.rcpts == nil {
		o.rcpts = map[int]int{}
	}
	o.rcpts[code]++
}

func (o *countingObserver) Message(queued bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if queued {
		o.queued++
	} else {
		o.notQueued++
	}
}

func (o *countingObserver) check(t *testing.T, what string, cond func(o *countingObserver) bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		o.mu.Lock()
		ok := cond(o)
		o.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			o.mu.Lock()
			defer o.mu.Unlock()
			t.Fatalf("%s: accepted=%d rejected=%d disconnects=%d rcpts=%v queued=%d not queued=%d",
				what, o.accepted, o.rejected, o.disconnects, o.rcpts, o.queued, o.notQueued)
		}
	}
}

// An in-process front end (seed directory, spool, no delivery) with the
// observer attached the way serve does: under the connection limits, and
// around the sessions.
func startObservedFront(t *testing.T, obs Observer) string {
	t.Helper()
	src, err := directory.NewLDIFBytes(deploy.SeedLDIF, directory.MailRecipientSchema)
	if err != nil {
		t.Fatal(err)
	}
	spool, err := queue.OpenSpool(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { spool.Close() })
	be, err := NewBackend(limited(Config{Hostname: "relay.test", RelayDomains: []string{"domain.com", "domain.ro", "company.com"},
		LookupTimeout: time.Second, MaxSize: 4096}), &routing.Expander{Source: src, Limits: routing.PostfixLimits}, spool, func(*envelope.Envelope) {}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := be.NewServer()
	ObserveServer(srv, obs)
	go srv.Serve(Listen(ObserveListener(raw, obs), ListenLimits{MaxConnsPerIP: 1, Hostname: "relay.test"}))
	t.Cleanup(func() { srv.Close() })
	return raw.Addr().String()
}

func TestObserver(t *testing.T) {
	obs := &countingObserver{}
	addr := startObservedFront(t, obs)

	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	obs.check(t, "greeted connection", func(o *countingObserver) bool { return o.accepted == 1 })

	// A second connection from the same address is over the limit: 421.
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(nc).ReadString('\n')
	nc.Close()
	if !strings.HasPrefix(line, "421 ") {
		t.Fatalf("second connection got %q, want 421", line)
	}
	obs.check(t, "refused connection", func(o *countingObserver) bool { return o.rejected == 1 && o.accepted == 1 })

	if err := c.Mail("alice@example.org", nil); err != nil {
		t.Fatal(err)
	}
	for to, want := range map[string]int{
		"sales@company.com":  250,
		"nobody@company.com": 550,
		"someone@gmail.com":  554,
	} {
		if got := replyCode(c.Rcpt(to, nil), 0); got != want {
			t.Fatalf("RCPT %s: %d, want %d", to, got, want)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: observed\r\n\r\nhello\r\n"))
	if err := w.Close(); err != nil {
		t.Fatalf("DATA: %v", err)
	}
	// Too big for MaxSize: refused at the end of DATA.
	if err := c.Mail("alice@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("info@company.com", nil); err != nil {
		t.Fatal(err)
	}
	w, err = c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 78)+"\r\n", 100)))
	if err := w.Close(); replyCode(err, 0) != 552 {
		t.Fatalf("oversized DATA: %v, want 552", err)
	}
	c.Quit()
	obs.check(t, "session", func(o *countingObserver) bool {
		return o.rcpts[250] == 2 && o.rcpts[550] == 1 && o.rcpts[554] == 1 && len(o.rcpts) == 3 &&
			o.queued == 1 && o.notQueued == 1 && o.disconnects == 1 && o.accepted == 1 && o.rejected == 1
	})
}

// Without an observer nothing is wrapped.
func TestObserveNil(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if ObserveListener(l, nil) != l {
		t.Fatal("listener wrapped without an observer")
	}
	srv := smtp.NewServer(nil)
	ObserveServer(srv, nil)
	if srv.Backend != nil {
		t.Fatal("backend wrapped without an observer")
	}
}
