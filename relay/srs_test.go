package relay

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mailfwd/routing/srs"
	"mailfwd/routing/srsstore"
)

func testSRS() *srs.Rewriter {
	return &srs.Rewriter{Secrets: [][]byte{[]byte("tops3cr3t")}, Domain: "srs.relay.test",
		Separator: '=', HashLength: 4, HashMin: 4, MaxAgeDays: 21, // postsrsd's
		Now: func() time.Time { return time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC) }}
}

// sendFrom sends one message with the given envelope sender and returns the
// reply of each RCPT ("250" or the error) and of DATA.
func sendFrom(t *testing.T, addr, from string, rcpts ...string) (rcptReplies []string, data string) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail(from, nil); err != nil {
		t.Fatal(err)
	}
	ok := 0
	for _, r := range rcpts {
		rep := replyText(c.Rcpt(r, nil))
		rcptReplies = append(rcptReplies, rep)
		if rep == "250" {
			ok++
		}
	}
	if ok == 0 {
		return rcptReplies, ""
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "Subject: srs\r\n\r\nhi\r\n")
	if err := w.Close(); err != nil {
		return rcptReplies, replyText(err)
	}
	return rcptReplies, "250"
}

func waitSunk(t *testing.T, m *sinkMTA, n int) []sunk {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.mu.Lock()
		got := append([]sunk(nil), m.msgs...)
		m.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink got %d messages, want %d", len(got), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// One message to a local alias and to an external forward leaves as two
// envelopes: the local one with the original sender, the forward with the
// SRS sender: vector F01 of postsrsd 1.10 for this secret and day.
func TestSRSSplitsLocalAndExternal(t *testing.T) {
	local, ext := &sinkMTA{}, &sinkMTA{}
	r := startRelayWith(t, seedSource(t), t.TempDir(), local, ext, testSRS())
	reps, data := sendFrom(t, r.addr, "alice@example.com", "sales@company.com", "internal.user@company.com")
	if data != "250" || strings.Join(reps, " ") != "250 250" {
		t.Fatalf("replies %v / %s", reps, data)
	}
	l := waitSunk(t, local, 1)[0]
	e := waitSunk(t, ext, 1)[0]
	if l.from != "alice@example.com" || strings.Join(l.rcpts, ",") != "central@company.com" {
		t.Errorf("local delivery %s → %v", l.from, l.rcpts)
	}
	if e.from != "SRS0=gIVm=KH=example.com=alice@srs.relay.test" || strings.Join(e.rcpts, ",") != "external.user@gmail.com" {
		t.Errorf("external delivery %s → %v", e.from, e.rcpts)
	}
}

func TestSRSNullSenderNotRewritten(t *testing.T) {
	local, ext := &sinkMTA{}, &sinkMTA{}
	r := startRelayWith(t, seedSource(t), t.TempDir(), local, ext, testSRS())
	if _, data := sendFrom(t, r.addr, "", "internal.user@company.com"); data != "250" {
		t.Fatalf("DATA %s", data)
	}
	if e := waitSunk(t, ext, 1)[0]; e.from != "" {
		t.Fatalf("null sender rewritten to %q", e.from)
	}
}

// A bounce to an SRS address we made reaches the original sender; a forged
// or foreign one is refused, and a client that keeps guessing is deferred.
func TestSRSReversePath(t *testing.T) {
	local, ext := &sinkMTA{}, &sinkMTA{}
	rw := testSRS()
	r := startRelayWith(t, seedSource(t), t.TempDir(), local, ext, rw)
	valid, err := rw.Forward(context.Background(), "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	reps, data := sendFrom(t, r.addr, "", valid)
	if reps[0] != "250" || data != "250" {
		t.Fatalf("bounce to %s: %v %s", valid, reps, data)
	}
	if e := waitSunk(t, ext, 1)[0]; strings.Join(e.rcpts, ",") != "alice@example.com" || e.from != "" {
		t.Fatalf("bounce delivered as %q → %v", e.from, e.rcpts)
	}
	// A bounce to the SRS form of a local sender goes through routing.
	own, _ := rw.Forward(context.Background(), "sales@company.com")
	if reps, _ := sendFrom(t, r.addr, "", own); reps[0] != "250" {
		t.Fatalf("bounce to %s: %v", own, reps)
	}
	if l := waitSunk(t, local, 1)[0]; strings.Join(l.rcpts, ",") != "central@company.com" {
		t.Fatalf("local bounce delivered to %v", l.rcpts)
	}
	forged := strings.Replace(valid, "=gIVm=", "=AAAA=", 1)
	for _, to := range []string{forged, "SRS0=gIVm=KH=example.com=bob@srs.relay.test", "anything@srs.relay.test"} {
		if reps, _ := sendFrom(t, r.addr, "", to); !strings.HasPrefix(reps[0], "550 5.7.1") {
			t.Errorf("RCPT %s: %s, want 550 5.7.1", to, reps[0])
		}
	}
	// The limit (3 in this test) is reached: a valid address still passes
	// (issue 15: a bounce is never lost to failures before it), an invalid
	// one gets 421 and the connection closes.
	if reps, _ := sendFrom(t, r.addr, "", valid); reps[0] != "250" {
		t.Errorf("a valid address after 3 failures: %s, want 250", reps[0])
	}
	if reps, _ := sendFrom(t, r.addr, "", forged); !strings.HasPrefix(reps[0], "421 4.7.1") {
		t.Errorf("a 4th failure: %s, want 421 4.7.1", reps[0])
	}
	// Another domain's SRS address is an ordinary address: not ours.
	if reps, _ := sendFrom(t, r.addr, "", "SRS0=gIVm=KH=example.com=alice@other.test"); !strings.HasPrefix(reps[0], "554 5.7.1") {
		t.Errorf("foreign SRS: %s, want 554 5.7.1", reps[0])
	}
}

// A sender whose SRS form would break the 64-octet limit is refused for
// external forwards only; local recipients of the same message still get it.
func TestSRSSenderTooLong(t *testing.T) {
	local, ext := &sinkMTA{}, &sinkMTA{}
	r := startRelayWith(t, seedSource(t), t.TempDir(), local, ext, testSRS())
	long := strings.Repeat("x", 40) + "@" + strings.Repeat("y", 20) + ".example"
	reps, data := sendFrom(t, r.addr, long, "internal.user@company.com", "sales@company.com")
	if !strings.HasPrefix(reps[0], "550 5.1.7") || reps[1] != "250" || data != "250" {
		t.Fatalf("replies %v, DATA %s", reps, data)
	}
	if l := waitSunk(t, local, 1)[0]; l.from != long {
		t.Fatalf("local copy sent from %q", l.from)
	}
}

// With a store, a sender too long to embed is forwarded with the database
// form (47 octets), and a bounce to it reaches the sender: nobody is refused.
func TestSRSLongSenderDatabaseForm(t *testing.T) {
	local, ext := &sinkMTA{}, &sinkMTA{}
	rw := testSRS()
	st, err := srsstore.OpenBolt(filepath.Join(t.TempDir(), "srs.db"), 21)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rw.Store = st
	r := startRelayWith(t, seedSource(t), t.TempDir(), local, ext, rw)
	long := "0100018b2f4e7c1a-5d6e7f80-1a2b-4c3d-9e8f-0a1b2c3d4e5f-000000@amazonses.com"
	reps, data := sendFrom(t, r.addr, long, "internal.user@company.com", "sales@company.com")
	if strings.Join(reps, " ") != "250 250" || data != "250" {
		t.Fatalf("replies %v, DATA %s", reps, data)
	}
	e := waitSunk(t, ext, 1)[0]
	if at := strings.IndexByte(e.from, '@'); at != 47 || !strings.Contains(e.from, "=1=") {
		t.Fatalf("forwarded from %q: want the 47-octet database form", e.from)
	}
	if l := waitSunk(t, local, 1)[0]; l.from != long {
		t.Errorf("local copy from %q", l.from)
	}
	reps, data = sendFrom(t, r.addr, "", e.from)
	if reps[0] != "250" || data != "250" {
		t.Fatalf("bounce to %s: %v %s", e.from, reps, data)
	}
	if b := waitSunk(t, ext, 2)[1]; strings.Join(b.rcpts, ",") != long {
		t.Errorf("bounce went to %v, want %s", b.rcpts, long)
	}
}

// A valid SRS address takes bounces only, one per transaction, and not too
// many for one decoded address.
func TestSRSReverseBounds(t *testing.T) {
	local, ext := &sinkMTA{}, &sinkMTA{}
	rw := testSRS()
	r := startRelayWith(t, seedSource(t), t.TempDir(), local, ext, rw)
	valid, _ := rw.Forward(context.Background(), "alice@example.com")
	other, _ := rw.Forward(context.Background(), "bob@example.com")
	if reps, _ := sendFrom(t, r.addr, "mallory@evil.test", valid); !strings.HasPrefix(reps[0], "550 5.7.1") {
		t.Errorf("SRS address from a non-null sender: %s, want 550 5.7.1", reps[0])
	}
	reps, data := sendFrom(t, r.addr, "", valid, other)
	if reps[0] != "250" || !strings.HasPrefix(reps[1], "452 4.5.3") || data != "250" {
		t.Errorf("two SRS recipients in one bounce: %v %s, want 250, 452 4.5.3", reps, data)
	}
	// default: 20 bounces per decoded address per hour; one is used above
	var last string
	for i := 0; i < 20; i++ {
		reps, _ := sendFrom(t, r.addr, "", valid)
		last = reps[0]
		if i < 19 && last != "250" {
			t.Fatalf("bounce %d: %s", i+2, last)
		}
	}
	if !strings.HasPrefix(last, "450 4.7.1") {
		t.Errorf("bounce 21 within the hour: %s, want 450 4.7.1", last)
	}
	if reps, _ := sendFrom(t, r.addr, "", other); reps[0] != "250" {
		t.Errorf("another address is not limited: %s", reps[0])
	}
}

// The global SRS failure budget: past it any client's failure closes the
// connection, however few failures that client made (a guesser spread over
// many addresses).
func TestSRSFailureBudget(t *testing.T) {
	rw := testSRS()
	valid, _ := rw.Forward(context.Background(), "alice@example.com")
	forged := strings.Replace(valid, "=gIVm=", "=AAAA=", 1)
	r := quietRelay(t, relayOpts{srs: rw, cfg: func(c *Config) { c.SRSFailureLimit, c.SRSFailureBudget = 1000, 2 }})
	c := beginBounce(t, r.addr)
	c.cmd("RCPT TO:<"+forged+">", "550 5.7.1")
	c.cmd("RCPT TO:<"+forged+">", "550 5.7.1")
	c.cmd("RCPT TO:<"+forged+">", "421 4.7.1")
	c.expectClosed()
	// a valid address still passes
	c = beginBounce(t, r.addr)
	c.cmd("RCPT TO:<"+valid+">", "250 2.0.0")
}
