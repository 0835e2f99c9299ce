package mtasts

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// fileVersion is the format of the cache file; a file of another
// version is ignored like a corrupt one.
const fileVersion = 1

type cacheFile struct {
	Version  int          `json:"version"`
	Policies []filePolicy `json:"policies"`
}

type filePolicy struct {
	Domain   string    `json:"domain"`
	ID       string    `json:"id"`
	Fetched  time.Time `json:"fetched"`
	LastUsed time.Time `json:"last_used"`
	Mode     Mode      `json:"mode"`
	MX       []string  `json:"mx"`
	MaxAge   int64     `json:"max_age"` // seconds
}

// load fills the empty cache from the file. A missing file is no error.
// Expired policies are dropped silently, invalid ones with an error
// after the others are loaded.
func (c *Cache) load() error {
	data, err := os.ReadFile(c.opts.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var f cacheFile
	if err := json.Unmarshal(data, &f); err != nil {
		return fmt.Errorf("%s: %w", c.opts.Path, err)
	}
	if f.Version != fileVersion {
		return fmt.Errorf("%s: version %d, want %d", c.opts.Path, f.Version, fileVersion)
	}
	now := c.opts.Now()
	// Most recently used first, so that past MaxDomains the least used go.
	sort.SliceStable(f.Policies, func(i, j int) bool { return f.Policies[i].LastUsed.After(f.Policies[j].LastUsed) })
	bad := 0
	for _, fp := range f.Policies {
		p := &Policy{Mode: fp.Mode, MX: fp.MX, MaxAge: time.Duration(fp.MaxAge) * time.Second}
		d, derr := normalizeDomain(fp.Domain)
		if derr != nil || d != fp.Domain || !validID(fp.ID) || fp.MaxAge < 0 || p.validate() != nil || c.entries[d] != nil {
			bad++
			continue
		}
		e := &entry{id: fp.ID, policy: p, fetched: fp.Fetched, lastUsed: fp.LastUsed}
		if now.Before(e.expires()) && len(c.entries) < c.opts.MaxDomains {
			c.entries[d] = e
		}
	}
	if bad > 0 {
		return fmt.Errorf("%s: %d invalid policies skipped", c.opts.Path, bad)
	}
	return nil
}

// save writes the cache file, if there is one; failures are logged: the
// cache in memory goes on working.
func (c *Cache) save() {
	if c.opts.Path == "" {
		return
	}
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	c.mu.Lock()
	f := cacheFile{Version: fileVersion, Policies: make([]filePolicy, 0, len(c.entries))}
	for d, e := range c.entries {
		f.Policies = append(f.Policies, filePolicy{
			Domain:   d,
			ID:       e.id,
			Fetched:  e.fetched.UTC(),
			LastUsed: e.lastUsed.UTC(),
			Mode:     e.policy.Mode,
			MX:       e.policy.MX,
			MaxAge:   int64(e.policy.MaxAge / time.Second),
		})
	}
	c.mu.Unlock()
	// Sorted, so that the file diffs well and tests can read it.
	sort.Slice(f.Policies, func(i, j int) bool { return f.Policies[i].Domain < f.Policies[j].Domain })
	data, err := json.MarshalIndent(f, "", "\t")
	if err == nil {
		err = writeFileAtomic(c.opts.Path, append(data, '\n'))
	}
	if err != nil {
		c.opts.Logf("mta-sts: saving cache: %v", err)
	}
}

// writeFileAtomic replaces path with data so that a crash leaves either
// the old file or the new one, never a torn one: a temporary file in the
// same directory, synced, renamed over path, and the directory synced so
// that the rename itself survives.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, a no-op
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
