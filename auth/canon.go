package auth

import (
	"bytes"
	"hash"
	"strings"
)

// field is one header field as it appears in the message: Raw holds the
// name, the colon, the value with its folding and the final CRLF (a bare LF
// in the input is kept as is; canonicalization treats it as CRLF).
type field struct {
	Name string // as written
	Raw  string
}

func (f field) lower() string { return strings.ToLower(f.Name) }

// value is the unfolded value without leading/trailing whitespace.
func (f field) value() string {
	_, v, _ := strings.Cut(f.Raw, ":")
	v = strings.ReplaceAll(v, "\r\n", "")
	v = strings.ReplaceAll(v, "\n", "")
	return strings.TrimSpace(v)
}

// parseHeader splits a header section (without the blank line) into fields.
// Lines before the first field that are not continuations are kept as
// nameless fields so nothing is lost; they never match a name.
func parseHeader(b []byte) []field {
	var out []field
	for len(b) > 0 {
		end := bytes.IndexByte(b, '\n')
		var line []byte
		if end < 0 {
			line, b = b, nil
		} else {
			line, b = b[:end+1], b[end+1:]
		}
		if (line[0] == ' ' || line[0] == '\t') && len(out) > 0 {
			out[len(out)-1].Raw += string(line)
			continue
		}
		name := ""
		if i := bytes.IndexByte(line, ':'); i > 0 {
			name = strings.TrimRight(string(line[:i]), " \t")
		}
		out = append(out, field{Name: name, Raw: string(line)})
	}
	return out
}

// relaxedHeader is RFC 6376 §3.4.2 relaxed header canonicalization of one
// field, with the final CRLF.
func relaxedHeader(raw string) string {
	name, v, _ := strings.Cut(raw, ":")
	name = strings.ToLower(strings.TrimRight(name, " \t"))
	v = strings.ReplaceAll(v, "\r\n", "")
	v = strings.ReplaceAll(v, "\n", "")
	v = strings.ReplaceAll(v, "\r", "")
	var b strings.Builder
	b.Grow(len(name) + len(v) + 3)
	b.WriteString(name)
	b.WriteByte(':')
	sp := false
	started := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == ' ' || c == '\t' {
			sp = true
			continue
		}
		if sp && started {
			b.WriteByte(' ')
		}
		sp = false
		started = true
		b.WriteByte(c)
	}
	b.WriteString("\r\n")
	return b.String()
}

// simpleHeader is RFC 6376 §3.4.1: unchanged, with CRLF line ends.
func simpleHeader(raw string) string {
	return fixCRLF(raw)
}

func fixCRLF(s string) string {
	if !strings.Contains(s, "\n") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' && (i == 0 || s[i-1] != '\r') {
			b.WriteByte('\r')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func canonHeader(c, raw string) string {
	if c == "relaxed" {
		return relaxedHeader(raw)
	}
	return simpleHeader(raw)
}

// bodyHasher canonicalizes a body (simple or relaxed, RFC 6376 §3.4.3/4)
// into a hash as it is written, streaming: it holds no line, only a count
// of empty lines (held back until a non-empty one follows, so trailing
// empty lines are dropped), a pending whitespace run (relaxed) and a
// pending CR. A body of one 50 MB line costs no more memory than any other.
type bodyHasher struct {
	relaxed bool
	h       hash.Hash
	empties int  // held-back empty lines
	content bool // the current line has content (its held empties are out)
	wsp     bool // relaxed: a whitespace run is pending
	cr      bool // a CR is pending (a line end if LF follows)
	any     bool // a non-empty line was written
	sum     []byte
	out     []byte // scratch
}

func newBodyHasher(relaxed bool, h hash.Hash) *bodyHasher {
	return &bodyHasher{relaxed: relaxed, h: h}
}

// emit writes content bytes of the current line, first the empty lines
// held back before it.
func (b *bodyHasher) emit(p ...byte) {
	if !b.content {
		for ; b.empties > 0; b.empties-- {
			b.out = append(b.out, '\r', '\n')
		}
		b.content, b.any = true, true
	}
	b.out = append(b.out, p...)
}

func (b *bodyHasher) Write(p []byte) (int, error) {
	b.out = b.out[:0]
	for _, c := range p {
		if b.cr {
			b.cr = false
			if c == '\n' {
				b.endLine()
				continue
			}
			b.content1('\r') // a CR that ends nothing is content
		}
		switch {
		case c == '\r':
			b.cr = true
		case c == '\n':
			b.endLine() // a bare LF ends a line as CRLF does
		default:
			b.content1(c)
		}
	}
	b.h.Write(b.out)
	if cap(b.out) > 64<<10 {
		b.out = nil
	}
	return len(p), nil
}

// content1 takes one content byte (not a line end).
func (b *bodyHasher) content1(c byte) {
	if b.relaxed {
		if c == ' ' || c == '\t' {
			b.wsp = true
			return
		}
		if b.wsp {
			b.wsp = false
			b.emit(' ', c)
			return
		}
	}
	b.emit(c)
}

func (b *bodyHasher) endLine() {
	b.wsp = false // relaxed: trailing whitespace is dropped
	if b.content {
		b.out = append(b.out, '\r', '\n')
		b.content = false
	} else {
		b.empties++
	}
}

// Sum finishes the body (an unterminated last line counts as a line) and
// returns the hash.
func (b *bodyHasher) Sum() []byte {
	b.out = b.out[:0]
	if b.cr {
		b.cr = false
		b.content1('\r')
	}
	if b.content {
		b.endLine()
	}
	b.h.Write(b.out)
	if !b.any && !b.relaxed {
		// simple: an empty body is a single CRLF
		b.h.Write([]byte("\r\n"))
	}
	return b.h.Sum(nil)
}

// tags parses a DKIM-style tag list (RFC 6376 §3.2). Whitespace (including
// folding) around and inside values is removed for the values we use.
func tags(v string) (map[string]string, bool) {
	m := map[string]string{}
	for _, part := range strings.Split(v, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, val, ok := strings.Cut(part, "=")
		if !ok {
			return nil, false
		}
		k = strings.TrimSpace(k)
		if _, dup := m[k]; dup || k == "" {
			return nil, false
		}
		m[k] = strings.TrimSpace(val)
	}
	return m, true
}

func stripWS(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, s)
}

// removeB empties the b= tag of a signature field, keeping everything
// else (RFC 6376 §3.7).
func removeB(raw string) string {
	name, v, _ := strings.Cut(raw, ":")
	parts := strings.Split(v, ";")
	for i, p := range parts {
		k, _, ok := strings.Cut(p, "=")
		if ok && strings.TrimSpace(k) == "b" {
			eq := strings.IndexByte(p, '=')
			parts[i] = p[:eq+1]
		}
	}
	return name + ":" + strings.Join(parts, ";")
}

// pickHeaders returns, for each name in h (in order), the next unused
// field of that name from the bottom of the header (RFC 6376 §5.4.2);
// names without a remaining field contribute nothing.
func pickHeaders(fields []field, names []string) []field {
	used := map[int]bool{}
	var out []field
	for _, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		for i := len(fields) - 1; i >= 0; i-- {
			if !used[i] && fields[i].lower() == n {
				used[i] = true
				out = append(out, fields[i])
				break
			}
		}
	}
	return out
}

// sumOnce is Sum, remembered.
func (b *bodyHasher) sumOnce() []byte {
	if b.sum == nil {
		b.sum = b.Sum()
	}
	return b.sum
}
