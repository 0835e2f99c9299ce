package relay

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mailfwd/auth"
	"mailfwd/queue"
	"mailfwd/queue/nexthop"
	"mailfwd/routing"
)

// authRelay is a relay with the edge checks on (authserv-id relay.test),
// delivering to a sink.
func authRelay(t *testing.T) (addr string, sink *sinkMTA) {
	t.Helper()
	a, err := auth.New(auth.Config{AuthServID: "relay.test", Resolver: authDNS, LookupTimeout: time.Second, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sink = &sinkMTA{}
	spool, err := queue.OpenSpool(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { spool.Close() })
	sl := listen(t)
	sinkSrv := smtp.NewServer(sink)
	go sinkSrv.Serve(sl)
	t.Cleanup(func() { sinkSrv.Close() })
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
	t.Cleanup(func() { cancel(); <-done; hop.Close() })
	l := listen(t)
	srv := be.NewServer()
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), sink
}

// A bare CR (or LF) is a line end to every parser of ours, as it is to the
// writer that sends the message on (and to the MTAs after it): what it
// hides from one cannot reach the next hop through another.
func TestBareLineEndsInHeaders(t *testing.T) {
	addr, sink := authRelay(t)
	n := 0
	send := func(from, msg string) string {
		d := dial(t, addr)
		d.reply()
		d.cmd("EHLO client.example.org")
		d.cmd("MAIL FROM:<" + from + ">")
		d.cmd("RCPT TO:<sales@company.com>")
		d.cmd("DATA")
		return d.cmd(msg + "\r\n.")
	}
	for _, eol := range []string{"\r", "\n"} {
		name := map[string]string{"\r": "bare CR", "\n": "bare LF"}[eol]
		// 1. a forged result under our authserv-id
		rep := send("alice@example.org", "X-Pad: x"+eol+"Authentication-Results: relay.test; spf=pass; dkim=pass; dmarc=pass\r\n"+
			"From: Alice <alice@example.org>\r\nSubject: forged\r\n\r\nbody\r\n")
		expectPrefix(t, name+": forged A-R", rep, "250 2.0.0 Ok: queued as ")
		n++
		got := waitSunk(t, sink, n)[n-1].data
		if c := strings.Count(got, "Authentication-Results: relay.test;"); c != 1 || strings.Contains(got, "dkim=pass; dmarc=pass") {
			t.Errorf("%s: a forged Authentication-Results under our id reached the next hop (%d of ours):\n%q", name, c, got)
		}
		// 2. Received lines hidden from the loop limit (50)
		hidden := strings.Repeat("Received: from a.test by b.test; Tue, 24 Nov 2026 10:00:00 +0000"+eol, 51)
		rep = send("alice@example.org", "X-Pad: x"+eol+hidden+"\r\nSubject: loop\r\n\r\nx\r\n")
		expectPrefix(t, name+": 51 hidden Received lines", rep, "554 5.4.6")
		// 3. a second From hidden from DMARC
		rep = send("alice@example.org", "From: Alice <alice@example.org>\r\nSubject: hi"+eol+"From: ceo@strict.test\r\n\r\nbody\r\n")
		expectPrefix(t, name+": second From", rep, "250 2.0.0 Ok: queued as ")
		n++
		got = waitSunk(t, sink, n)[n-1].data
		if !strings.Contains(got, "dmarc=permerror") {
			t.Errorf("%s: a second From did not make DMARC a permerror:\n%q", name, got)
		}
		if strings.Contains(strings.ReplaceAll(got, "\r\n", ""), "\r") || strings.Contains(strings.ReplaceAll(got, "\r\n", ""), "\n") {
			t.Errorf("%s: a bare line end left us:\n%q", name, got)
		}
	}
}

func TestLineEndsReader(t *testing.T) {
	for in, want := range map[string]string{
		"a\r\nb\r\n":     "a\r\nb\r\n",
		"a\rb\nc\r\n":    "a\r\nb\r\nc\r\n",
		"a\r\r\nb":       "a\r\n\r\nb",
		"a\r":            "a\r\n",
		"\n\n\r\r":       "\r\n\r\n\r\n\r\n",
		"":               "",
		"no line ends":   "no line ends",
		"x\r\n\ry\n\r\n": "x\r\n\r\ny\r\n\r\n",
	} {
		for _, chunk := range []int{1, 2, 3, 7, 4096} {
			r := newLineEnds(&chunkReader{s: in, n: chunk})
			var got strings.Builder
			buf := make([]byte, chunk+1)
			for {
				n, err := r.Read(buf)
				got.Write(buf[:n])
				if err != nil {
					break
				}
			}
			if got.String() != want {
				t.Errorf("%q in chunks of %d: %q, want %q", in, chunk, got.String(), want)
			}
		}
	}
}

type chunkReader struct {
	s string
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.s == "" {
		return 0, io.EOF
	}
	n := copy(p, c.s[:min(c.n, len(c.s))])
	c.s = c.s[n:]
	return n, nil
}

func FuzzLineEnds(f *testing.F) {
	for _, s := range []string{"a\r\nb", "a\rb", "a\nb", "\r\r\n", "\r"} {
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, in string, chunk int) {
		if chunk <= 0 || chunk > 64 {
			chunk = 5
		}
		b, _ := io.ReadAll(newLineEnds(&chunkReader{s: in, n: chunk}))
		out := string(b)
		// only CRLF line ends, and nothing but line ends changed
		if strings.Count(out, "\r") != strings.Count(out, "\n") || strings.Count(out, "\r\n") != strings.Count(out, "\r") {
			t.Fatalf("%q -> %q: a bare line end left", in, out)
		}
		if strings.NewReplacer("\r", "", "\n", "").Replace(out) != strings.NewReplacer("\r", "", "\n", "").Replace(in) {
			t.Fatalf("%q -> %q: other bytes changed", in, out)
		}
	})
}
