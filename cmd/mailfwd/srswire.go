package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"mailfwd/config"
	"mailfwd/routing/srs"
	"mailfwd/routing/srsstore"
)

// srsRuntime is what SRS keeps across reloads: the sender store (a Bolt
// file may be open only once) and the cut-over day. A reload re-reads the
// secrets and settings, not these.
type srsRuntime struct {
	store   srs.Store
	close   func() error
	cutover time.Time
	what    string // for logs: where the store is
}

// cutoverFile records the first day this relay minted v2 hashes.
const cutoverFile = "srs-cutover"

// openSRS opens the store and settles the cut-over day (nil without SRS).
func openSRS(c *config.Config, now time.Time) (*srsRuntime, error) {
	s := c.SRS
	if s == nil {
		return nil, nil
	}
	rt := &srsRuntime{}
	if r := s.Store.Redis; r != nil {
		st, err := redisStore(c, s.MaxAgeDays)
		if err != nil {
			return nil, err
		}
		rt.store, rt.close, rt.what = st, st.Close, "redis "+r.Address
	} else {
		path := c.Path(s.Store.Path)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("srs.store.path: %w", err)
		}
		st, err := srsstore.OpenBolt(path, s.MaxAgeDays)
		if err != nil {
			return nil, err
		}
		rt.store, rt.close, rt.what = st, st.Close, path
	}
	cut, err := srsCutover(c, now)
	if err != nil {
		rt.close()
		return nil, err
	}
	rt.cutover = cut
	return rt, nil
}

// srsCutover is srs.legacy_until, or the day in spool_dir/srs-cutover,
// written (durably) on the first start with v2 hashes.
func srsCutover(c *config.Config, now time.Time) (time.Time, error) {
	if v := c.SRS.LegacyUntil; v != "" {
		return time.Parse("2006-01-02", v)
	}
	dir := c.Path(c.SpoolDir)
	path := filepath.Join(dir, cutoverFile)
	b, err := os.ReadFile(path)
	if err == nil {
		t, err := time.Parse("2006-01-02", strings.TrimSpace(string(b)))
		if err != nil {
			return time.Time{}, fmt.Errorf("%s: %q is not a day (YYYY-MM-DD); fix or remove it", path, b)
		}
		return t, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return time.Time{}, err
	}
	day := now.UTC().Format("2006-01-02")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return time.Time{}, err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return time.Time{}, err
	}
	_, err = f.WriteString(day + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		if d, derr := os.Open(dir); derr == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("recording the SRS cut-over day in %s: %w", path, err)
	}
	return time.Parse("2006-01-02", day)
}

// pingSRSStore checks that a shared (Redis) store answers (check-config:
// a Bolt file is the running relay's, and not opened).
func pingSRSStore(ctx context.Context, c *config.Config) error {
	if c.SRS.Store.Redis == nil {
		return nil
	}
	st, err := redisStore(c, c.SRS.MaxAgeDays)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Ping(ctx); err != nil {
		return fmt.Errorf("srs.store.redis %s: %w", c.SRS.Store.Redis.Address, err)
	}
	return nil
}
