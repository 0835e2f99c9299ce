package directory

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mailfwd/routing"
)

// Entry is one directory entry: attribute names are lower-cased, values
// keep their spelling.
type Entry struct {
	DN    string
	Attrs map[string][]string
}

// ParseLDIF reads LDIF content records (RFC 2849): comments, folded lines
// and base64 values; change records are refused because a directory file
// describes entries, not edits.
func ParseLDIF(r io.Reader) ([]Entry, error) {
	var (
		entries []Entry
		cur     *Entry
		lines   []string // logical lines of the current record, unfolded
		starts  []int    // the line number each logical line starts on
		lineNo  int
		comment bool // the last line was a comment, so its continuations are too
	)
	flush := func() error {
		defer func() { lines, starts = lines[:0], starts[:0]; cur = nil }()
		for i, l := range lines {
			lineNo := starts[i]
			name, value, err := parseLDIFLine(l)
			if err != nil {
				return fmt.Errorf("line %d: %w", lineNo, err)
			}
			lname := strings.ToLower(name)
			switch {
			case cur == nil && lname == "version":
				continue
			case cur == nil && lname == "dn":
				cur = &Entry{DN: value, Attrs: map[string][]string{}}
			case cur == nil:
				return fmt.Errorf("line %d: record does not start with a dn line", lineNo)
			case lname == "changetype":
				return fmt.Errorf("line %d: change records are not supported in a directory file", lineNo)
			default:
				cur.Attrs[lname] = append(cur.Attrs[lname], value)
			}
		}
		if cur != nil {
			entries = append(entries, *cur)
		}
		return nil
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		lineNo++
		l := strings.TrimSuffix(sc.Text(), "\r")
		switch {
		case strings.HasPrefix(l, "#"):
			comment = true
			continue
		case strings.HasPrefix(l, " ") && comment:
			continue
		case strings.HasPrefix(l, " "):
			if len(lines) == 0 {
				return nil, fmt.Errorf("line %d: continuation line without a line to continue", lineNo)
			}
			lines[len(lines)-1] += l[1:]
		case strings.TrimSpace(l) == "":
			if err := flush(); err != nil {
				return nil, err
			}
		default:
			lines = append(lines, l)
			starts = append(starts, lineNo)
		}
		comment = false
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return entries, nil
}

func parseLDIFLine(l string) (name, value string, err error) {
	i := strings.IndexByte(l, ':')
	if i <= 0 {
		return "", "", fmt.Errorf("no attribute name in %q", l)
	}
	name, rest := l[:i], l[i+1:]
	switch {
	case strings.HasPrefix(rest, ":"):
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest[1:]))
		if err != nil {
			return "", "", fmt.Errorf("attribute %s: bad base64: %w", name, err)
		}
		return name, string(b), nil
	case strings.HasPrefix(rest, "<"):
		return "", "", fmt.Errorf("attribute %s: URL values are not supported", name)
	default:
		return name, strings.TrimLeft(rest, " "), nil
	}
}

// Schema says which attributes a source searches and returns: by default
// the 389-DS mailRecipient schema, as the seed uses it.
type Schema struct {
	// QueryAttributes are matched against the address (equality,
	// case-insensitive, as 389-DS's caseIgnore rules do).
	QueryAttributes []string
	// ResultAttributes hold what a matching entry rewrites to.
	ResultAttributes []string
	// FallbackAttribute, if set, is returned for a matching entry that has
	// none of the result attributes (an entry without a forwarding address
	// delivers to its own mail address).
	FallbackAttribute string
}

// MailRecipientSchema is mail/mailAlternateAddress → mailForwardingAddress,
// else mail.
var MailRecipientSchema = Schema{
	QueryAttributes:   []string{"mail", "mailAlternateAddress"},
	ResultAttributes:  []string{"mailForwardingAddress"},
	FallbackAttribute: "mail",
}

// results applies the schema's result rules to one matching entry.
func (s Schema) results(source, dn string, attrs func(name string) []string) []routing.Match {
	var out []routing.Match
	for _, a := range s.ResultAttributes {
		for _, v := range attrs(a) {
			out = append(out, routing.Match{Value: v, Source: source, DN: dn, Attribute: a})
		}
	}
	if len(out) == 0 && s.FallbackAttribute != "" {
		for _, v := range attrs(s.FallbackAttribute) {
			out = append(out, routing.Match{Value: v, Source: source, DN: dn, Attribute: s.FallbackAttribute})
		}
	}
	return out
}

// LDIFSource answers from entries held in memory, loaded from an LDIF file
// (re-read when it changes) or from bytes (the embedded default).
type LDIFSource struct {
	schema Schema
	path   string // "" for fixed content
	log    *slog.Logger

	index     atomic.Pointer[map[string][]*Entry] // lower-cased address → entries
	mu        sync.Mutex                          // serialises reloads
	lastCheck atomic.Int64                        // unix nanos of the last stat
	modTime   time.Time
	size      int64
}

// ldifRecheck bounds how often Lookup stats the file for changes.
const ldifRecheck = time.Second

// NewLDIFBytes serves fixed LDIF content.
func NewLDIFBytes(data []byte, schema Schema) (*LDIFSource, error) {
	s := &LDIFSource{schema: schema, log: slog.Default()}
	entries, err := ParseLDIF(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	s.install(entries)
	return s, nil
}

// NewLDIFFile serves an LDIF file and reloads it when its size or
// modification time changes. A file that fails to parse on reload is
// logged and the previous content kept: a typo must not empty the directory.
func NewLDIFFile(path string, schema Schema, log *slog.Logger) (*LDIFSource, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &LDIFSource{schema: schema, path: path, log: log}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload re-reads the file now.
func (s *LDIFSource) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.Open(s.path)
	if err != nil {
		return fmt.Errorf("ldif %s: %w", s.path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("ldif %s: %w", s.path, err)
	}
	// A file being written in place (truncated, then filled) must not
	// replace a loaded directory: every address would be "not found" (550)
	// until the next reload. An empty file, or one that changed while it
	// was read, is kept for the next check. (Writing a new file and
	// renaming it over the old one is atomic and never seen half-written.)
	if st.Size() == 0 && s.loadedEntries() > 0 {
		return fmt.Errorf("ldif %s: empty (being written?): keeping the %d entries loaded", s.path, s.loadedEntries())
	}
	entries, err := ParseLDIF(f)
	if err != nil {
		return fmt.Errorf("ldif %s: %w", s.path, err)
	}
	if now, err := os.Stat(s.path); err == nil && (now.Size() != st.Size() || !now.ModTime().Equal(st.ModTime())) {
		return fmt.Errorf("ldif %s: changed while it was read: keeping the entries loaded", s.path)
	}
	s.install(entries)
	s.modTime, s.size = st.ModTime(), st.Size()
	return nil
}

// loadedEntries counts the addresses of the loaded index.
func (s *LDIFSource) loadedEntries() int {
	if idx := s.index.Load(); idx != nil {
		return len(*idx)
	}
	return 0
}

func (s *LDIFSource) install(entries []Entry) {
	idx := map[string][]*Entry{}
	for i := range entries {
		e := &entries[i]
		seen := map[string]bool{}
		for _, qa := range s.schema.QueryAttributes {
			for _, v := range e.Attrs[strings.ToLower(qa)] {
				k := strings.ToLower(v)
				if !seen[k] {
					seen[k] = true
					idx[k] = append(idx[k], e)
				}
			}
		}
	}
	s.index.Store(&idx)
}

func (s *LDIFSource) maybeReload() {
	if s.path == "" {
		return
	}
	now := time.Now().UnixNano()
	last := s.lastCheck.Load()
	if now-last < int64(ldifRecheck) || !s.lastCheck.CompareAndSwap(last, now) {
		return
	}
	st, err := os.Stat(s.path)
	if err != nil {
		s.log.Warn("ldif directory file unreadable, keeping loaded entries", "file", s.path, "err", err)
		return
	}
	s.mu.Lock()
	changed := !st.ModTime().Equal(s.modTime) || st.Size() != s.size
	s.mu.Unlock()
	if !changed {
		return
	}
	if err := s.Reload(); err != nil {
		s.log.Error("ldif reload failed, keeping previous entries", "err", err)
		return
	}
	s.log.Info("ldif directory reloaded", "file", s.path)
}

// Lookup returns the result values of every entry matching addr.
func (s *LDIFSource) Lookup(_ context.Context, addr string) ([]routing.Match, error) {
	s.maybeReload()
	idx := *s.index.Load()
	name := "ldif (embedded seed)"
	if s.path != "" {
		name = "ldif " + s.path
	}
	var out []routing.Match
	for _, e := range idx[strings.ToLower(addr)] {
		out = append(out, s.schema.results(name, e.DN, func(n string) []string { return e.Attrs[strings.ToLower(n)] })...)
	}
	return out, nil
}
