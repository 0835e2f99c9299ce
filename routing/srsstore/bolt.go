// Package srsstore keeps the senders behind SRS database-form addresses
// (srs.Store): Bolt, one file beside the spool, the default; Redis,
// shared by several mailfwd instances and with postsrsd 2.x, in its key
// layout.
//
// Bolt is go.etcd.io/bbolt (etcd's, also mox's queue index): pure Go, so the
// static binary stays static, one file, transactions that are durable when
// Put returns (fsync), and a group commit (Batch) that shares one sync among
// concurrent sessions. SQLite would do too, but costs a C toolchain or a far
// larger pure-Go port for what is a key-value map with whole-day expiry.
package srsstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"mailfwd/routing/srs"
)

// Bolt keeps one bucket per minting day, so a lookup goes straight to its
// day (the address's stamp says which) and expiry drops whole days.
type Bolt struct {
	db     *bolt.DB
	maxAge int64 // days a bucket is kept after its day (MaxAgeDays)
	now    func() time.Time

	mu     sync.Mutex
	recent map[string]bool // day/key pairs stored since the last reset
	stop   chan struct{}
	done   chan struct{}
}

// recentMax bounds the remembered puts (a repeat sender costs no write).
const recentMax = 100_000

// OpenBolt opens (or creates) the store at path, keeping each day for
// maxAgeDays after it (the SRS MaxAgeDays), and drops expired days now and
// every hour.
func OpenBolt(path string, maxAgeDays int) (*Bolt, error) {
	return OpenBoltClock(path, maxAgeDays, time.Now)
}

// OpenBoltClock is OpenBolt with the clock expiry goes by (tools that run
// at another day, tests).
func OpenBoltClock(path string, maxAgeDays int, now func() time.Time) (*Bolt, error) {
	if maxAgeDays < 1 {
		return nil, fmt.Errorf("srs store: max age %d days", maxAgeDays)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("srs store %s: %w", path, err)
	}
	b := &Bolt{db: db, maxAge: int64(maxAgeDays), now: now, recent: map[string]bool{},
		stop: make(chan struct{}), done: make(chan struct{})}
	if _, err := b.Expire(); err != nil {
		db.Close()
		return nil, err
	}
	go b.expireLoop()
	return b, nil
}

func (b *Bolt) expireLoop() {
	defer close(b.done)
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.Expire()
		}
	}
}

// Close stops the expiry and closes the file.
func (b *Bolt) Close() error {
	close(b.stop)
	<-b.done
	return b.db.Close()
}

func dayBucket(day int64) []byte {
	n := make([]byte, 9)
	n[0] = 'd'
	binary.BigEndian.PutUint64(n[1:], uint64(day))
	return n
}

// Put stores sender under key for day, durably, before it returns.
func (b *Bolt) Put(ctx context.Context, key, sender string, day int64) error {
	r := fmt.Sprint(day, "/", key)
	b.mu.Lock()
	seen := b.recent[r]
	b.mu.Unlock()
	if seen {
		return nil
	}
	done := make(chan error, 1)
	go func() {
		done <- b.db.Batch(func(tx *bolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists(dayBucket(day))
			if err != nil {
				return err
			}
			if string(bk.Get([]byte(key))) == sender {
				return nil
			}
			return bk.Put([]byte(key), []byte(sender))
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("srs store: %w", err)
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	b.mu.Lock()
	if len(b.recent) >= recentMax {
		b.recent = map[string]bool{}
	}
	b.recent[r] = true
	b.mu.Unlock()
	return nil
}

// Get returns the sender stored under key for day.
func (b *Bolt) Get(_ context.Context, key string, day int64) (string, error) {
	var v []byte
	err := b.db.View(func(tx *bolt.Tx) error {
		if bk := tx.Bucket(dayBucket(day)); bk != nil {
			v = append([]byte(nil), bk.Get([]byte(key))...)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("srs store: %w", err)
	}
	if len(v) == 0 {
		return "", srs.ErrUnknownKey
	}
	return string(v), nil
}

// Expire drops the days older than the max age and returns how many.
func (b *Bolt) Expire() (int, error) {
	oldest := b.now().Unix()/86400 - b.maxAge
	var drop [][]byte
	err := b.db.Update(func(tx *bolt.Tx) error {
		c := tx.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if len(k) == 9 && k[0] == 'd' && int64(binary.BigEndian.Uint64(k[1:])) < oldest {
				drop = append(drop, append([]byte(nil), k...))
			}
		}
		for _, k := range drop {
			if err := tx.DeleteBucket(k); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("srs store expiry: %w", err)
	}
	if len(drop) > 0 {
		b.mu.Lock()
		b.recent = map[string]bool{}
		b.mu.Unlock()
	}
	return len(drop), nil
}
