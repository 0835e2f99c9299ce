package srsstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"mailfwd/routing/srs"
)

func TestBoltPutGetExpire(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "srs.db")
	b, err := OpenBolt(path, 21)
	if err != nil {
		t.Fatal(err)
	}
	today := time.Now().Unix() / 86400
	for d := int64(0); d <= 25; d++ {
		if err := b.Put(ctx, "KEY", fmt.Sprintf("sender-%d@example.com", d), today-d); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := b.Get(ctx, "KEY", today-3); err != nil || got != "sender-3@example.com" {
		t.Errorf("day -3: %q, %v", got, err)
	}
	if _, err := b.Get(ctx, "OTHER", today); !errors.Is(err, srs.ErrUnknownKey) {
		t.Errorf("unknown key: %v", err)
	}
	if _, err := b.Get(ctx, "KEY", today+1); !errors.Is(err, srs.ErrUnknownKey) {
		t.Errorf("a day with nothing stored: %v", err)
	}
	// Durable: a reopened file has it all.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err = OpenBolt(path, 21) // and the open expires days 22..25
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for d := int64(0); d <= 25; d++ {
		got, err := b.Get(ctx, "KEY", today-d)
		if d <= 21 && (err != nil || got != fmt.Sprintf("sender-%d@example.com", d)) {
			t.Errorf("after reopen, day -%d: %q, %v", d, got, err)
		}
		if d > 21 && !errors.Is(err, srs.ErrUnknownKey) {
			t.Errorf("day -%d outlived the max age: %q, %v", d, got, err)
		}
	}
	// Expiry as time passes.
	b.now = func() time.Time { return time.Now().Add(5 * 24 * time.Hour) }
	n, err := b.Expire()
	if err != nil || n != 5 {
		t.Errorf("five days on: %d days dropped, %v", n, err)
	}
	if _, err := b.Get(ctx, "KEY", today-17); !errors.Is(err, srs.ErrUnknownKey) {
		t.Errorf("day -17, five days on: %v", err)
	}
	if _, err := b.Get(ctx, "KEY", today-16); err != nil {
		t.Errorf("day -16, five days on: %v", err)
	}
}

// Concurrent sessions storing at once share syncs (Batch) and all land.
func TestBoltConcurrentPuts(t *testing.T) {
	ctx := context.Background()
	b, err := OpenBolt(filepath.Join(t.TempDir(), "srs.db"), 21)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	today := time.Now().Unix() / 86400
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- b.Put(ctx, fmt.Sprintf("K%03d", i), fmt.Sprintf("s%d@example.com", i), today)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range 200 {
		if got, err := b.Get(ctx, fmt.Sprintf("K%03d", i), today); err != nil || got != fmt.Sprintf("s%d@example.com", i) {
			t.Fatalf("K%03d: %q, %v", i, got, err)
		}
	}
}

// A second process cannot open the same file (bbolt's flock): the second
// instance fails at start rather than corrupting the first one's store.
func TestBoltLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "srs.db")
	b, err := OpenBolt(path, 21)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// bbolt's lock is per process and file descriptor; same process: the
	// timeout still applies.
	done := make(chan error, 1)
	go func() {
		b2, err := OpenBolt(path, 21)
		if err == nil {
			b2.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a second open of a store in use succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Error("a second open hung past its timeout")
	}
}
