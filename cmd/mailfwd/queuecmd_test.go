package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mailfwd/queue"
	"mailfwd/queue/envelope"
	"mailfwd/queue/nexthop"
)

func writeQueueConfig(t *testing.T) (cfg, spoolDir string) {
	t.Helper()
	dir := t.TempDir()
	cfg = filepath.Join(dir, "mailfwd.yaml")
	os.WriteFile(cfg, []byte("relay_domains: [company.com]\nspool_dir: spool\ndirectory:\n  ldif: {}\ndelivery:\n  next_hop: 127.0.0.1:1\n"), 0o600)
	return cfg, filepath.Join(dir, "spool")
}

func queueMsg(t *testing.T, s *queue.Spool, from string, rcpts ...string) string {
	t.Helper()
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "Subject: queued test\r\nX-Test: 1\r\n\r\nbody\r\n")
	env := &envelope.Envelope{From: from, Received: time.Now(), NextAttempt: time.Now().Add(time.Hour)}
	for _, r := range rcpts {
		env.Recipients = append(env.Recipients, envelope.Recipient{Addr: r, Status: envelope.Pending, LastReply: "451 4.4.1 next hop down"})
	}
	if err := w.Commit(env); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(env); err != nil { // tried once: due in an hour, after a restart too
		t.Fatal(err)
	}
	return env.ID
}

func runQueue(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := queueCommand(args, &out)
	return out.String(), err
}

// Without a daemon the command takes the spool's lock and changes it.
func TestQueueCommandDirect(t *testing.T) {
	cfg, dir := writeQueueConfig(t)
	s, err := queue.OpenSpool(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := queueMsg(t, s, "alice@example.org", "central@company.com", "x@gmail.com")
	b := queueMsg(t, s, "", "bob@example.org")
	s.Close()

	out, err := runQueue(t, "-config", cfg, "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{a, b, "alice@example.org", "MAILER-DAEMON", "central@company.com", "(pending: 451 4.4.1 next hop down)", "in 2 Requests"} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	if _, err := runQueue(t, "-config", cfg, "hold", a); err != nil {
		t.Fatal(err)
	}
	if out, _ := runQueue(t, "-config", cfg, "list"); !strings.Contains(out, a+"!") {
		t.Errorf("held message not marked:\n%s", out)
	}
	out, err = runQueue(t, "-config", cfg, "show", a)
	if err != nil || !strings.Contains(out, `"held": true`) || !strings.Contains(out, "Subject: queued test") || strings.Contains(out, "\nbody") {
		t.Errorf("show: %v\n%s", err, out)
	}
	if _, err := runQueue(t, "-config", cfg, "release", a); err != nil {
		t.Fatal(err)
	}
	if _, err := runQueue(t, "-config", cfg, "delete", b); err != nil {
		t.Fatal(err)
	}
	r := queue.ReadSpool(dir)
	if envs, _ := r.List(); len(envs) != 1 || envs[0].ID != a || envs[0].Held || time.Until(envs[0].NextAttempt) > time.Minute {
		t.Fatalf("after release and delete: %+v", envs)
	}
	if out, err := runQueue(t, "-config", cfg, "quarantine"); err != nil || !strings.Contains(out, "Quarantine is empty") {
		t.Fatalf("quarantine: %v\n%s", err, out)
	}
	os.MkdirAll(filepath.Join(dir, "corrupt"), 0o700)
	os.WriteFile(filepath.Join(dir, "corrupt", "661A0000000000000AB.msg"), []byte("damaged"), 0o600)
	if out, err := runQueue(t, "-config", cfg, "quarantine"); err != nil || !strings.Contains(out, "661A0000000000000AB.msg") || !strings.Contains(out, "1 files") {
		t.Fatalf("quarantine with a file: %v\n%s", err, out)
	}
	if _, err := runQueue(t, "-config", cfg, "delete", "NOSUCHID"); !errors.Is(err, queue.ErrNoMessage) {
		t.Fatalf("delete of a missing ID: %v", err)
	}
	if _, err := runQueue(t, "-config", cfg, "hold"); err == nil {
		t.Fatal("hold without ID accepted")
	}
}

// countingHop defers everything and counts attempts per message.
type countingHop struct{ n atomic.Int64 }

func (h *countingHop) String() string { return "counting" }
func (h *countingHop) Send(_ context.Context, _ *envelope.Envelope, _ string, rcpts []string, _ io.Reader) ([]nexthop.Reply, error) {
	h.n.Add(1)
	out := make([]nexthop.Reply, len(rcpts))
	for i := range out {
		out[i] = nexthop.Reply{Code: 451, Text: "later"}
	}
	return out, nil
}

// With a daemon running, the command talks to it over the control socket.
func TestQueueCommandThroughDaemon(t *testing.T) {
	cfg, dir := writeQueueConfig(t)
	s, err := queue.OpenSpool(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := queueMsg(t, s, "alice@example.org", "central@company.com")
	b := queueMsg(t, s, "alice@example.org", "x@company.com")
	s.Close()
	// The daemon starts on that spool: both messages due in an hour.
	if s, err = queue.OpenSpool(dir, nil); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	hop := &countingHop{}
	sched := &queue.Scheduler{Spool: s, Hop: hop, Workers: 2, ExternalWorkers: 2, Retry: queue.Retry{Min: time.Hour, Max: time.Hour},
		ExternalRetry: queue.Retry{Min: time.Hour, Max: time.Hour}, Lifetime: 24 * time.Hour, DestinationConcurrency: 2, InitialConcurrency: 2,
		RecipientLimit: 100, ActiveLimit: 100, DeadAfter: 3, Log: slogT(t)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { sched.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if err := serveControl(ctx, s.ControlSocket(), sched, slogDiscard()); err != nil {
		t.Fatal(err)
	}
	// Both messages are due in an hour; flush makes them due now.
	if _, err := runQueue(t, "-config", cfg, "flush"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return hop.n.Load() >= 2 })
	if _, err := runQueue(t, "-config", cfg, "hold", a); err != nil {
		t.Fatal(err)
	}
	before := hop.n.Load()
	if _, err := runQueue(t, "-config", cfg, "flush"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return hop.n.Load() >= before+1 })
	time.Sleep(50 * time.Millisecond)
	if n := hop.n.Load(); n != before+1 {
		t.Fatalf("flush with one held message made %d attempts, want 1", n-before)
	}
	if env, _ := s.Load(a); !env.Held {
		t.Fatal("hold not recorded in the spool")
	}
	if _, err := runQueue(t, "-config", cfg, "delete", b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(b); err == nil {
		t.Fatal("deleted message still in the spool")
	}
	if _, err := runQueue(t, "-config", cfg, "release", a); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { env, _ := s.Load(a); return env != nil && !env.Held && env.Attempts >= 2 }) // flushed once, then released
	// Like qshape: the destination, its window, its counts and why it
	// defers.
	out, err := runQueue(t, "-config", cfg, "destinations")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "-Destination-") {
		t.Fatalf("queue destinations:\n%s", out)
	}
	f := strings.Fields(lines[1])
	if len(f) < 11 || f[1] != "alive" || f[8] == "0" || !strings.HasSuffix(lines[1], "451 later") {
		t.Fatalf("queue destinations row (want alive, deferrals, the last reply):\n%s", out)
	}
	if _, err := runQueue(t, "-config", cfg, "hold", "NOSUCH"); err == nil || !strings.Contains(err.Error(), "no such message") {
		t.Fatalf("hold of a missing ID through the daemon: %v", err)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func slogT(t *testing.T) *slog.Logger { return slog.New(slog.NewTextHandler(tWriter{t}, nil)) }
