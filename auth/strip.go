package auth

import (
	"bytes"
	"io"
	"strings"
)

// StripForged returns a reader of r without the header fields
// "Authentication-Results" that claim authservID (RFC 8601 §5: a forged
// claim of our own results). Only the header section is examined; the body
// and every other field pass unchanged. Errors of r are passed on.
func StripForged(r io.Reader, authservID string) io.Reader {
	return &stripper{r: r, id: authservID, buf: make([]byte, 32<<10)}
}

// maxField is how much of one field is held back to decide on it.
const maxField = 64 << 10

type stripper struct {
	r    io.Reader
	id   string
	buf  []byte
	out  []byte
	err  error
	body bool

	cur     []byte // the current field, undecided
	state   int    // of the current field: 0 none, 1 undecided, 2 keep, 3 drop
	line    []byte // partial line
	midLine bool   // inside an over-long line whose field is decided
	removed int
}

func (s *stripper) Read(p []byte) (int, error) {
	for {
		if len(s.out) > 0 {
			n := copy(p, s.out)
			s.out = s.out[n:]
			return n, nil
		}
		if s.err != nil {
			return 0, s.err
		}
		if s.body {
			return s.r.Read(p)
		}
		n, err := s.r.Read(s.buf)
		s.process(s.buf[:n])
		if err != nil {
			s.flush()
			s.err = err
		}
	}
}

func (s *stripper) emit(b []byte) { s.out = append(s.out, b...) }

// decide settles the current field and emits it unless forged.
func (s *stripper) decide() {
	if s.state != 1 {
		return
	}
	if s.forged(s.cur) {
		s.state = 3
		s.removed++
	} else {
		s.state = 2
		s.emit(s.cur)
	}
	s.cur = s.cur[:0]
}

func (s *stripper) process(b []byte) {
	for len(b) > 0 {
		if s.body {
			s.emit(b)
			return
		}
		i := bytes.IndexByte(b, '\n')
		if s.midLine {
			end := len(b)
			if i >= 0 {
				end = i + 1
				s.midLine = false
			}
			if s.state == 2 {
				s.emit(b[:end])
			}
			b = b[end:]
			continue
		}
		if i < 0 {
			s.line = append(s.line, b...)
			if len(s.line) > maxField {
				// an over-long line: settle its field now, stream the rest
				s.startLine(s.line)
				s.decide()
				s.line = s.line[:0]
				s.midLine = true
			}
			return
		}
		s.line = append(s.line, b[:i+1]...)
		b = b[i+1:]
		s.startLine(s.line)
		s.line = s.line[:0]
	}
}

// startLine handles one complete line (or the start of an over-long one).
func (s *stripper) startLine(l []byte) {
	cont := len(l) > 0 && (l[0] == ' ' || l[0] == '\t') && s.state != 0
	if cont {
		switch s.state {
		case 1:
			s.cur = append(s.cur, l...)
			if len(s.cur) > maxField {
				s.decide()
			}
		case 2:
			s.emit(l)
		}
		return
	}
	s.decide()
	if string(l) == "\r\n" || string(l) == "\n" {
		s.emit(l)
		s.body = true
		s.state = 0
		return
	}
	s.state = 1
	s.cur = append(s.cur[:0], l...)
}

func (s *stripper) flush() {
	if !s.body {
		if len(s.line) > 0 && !s.midLine {
			s.startLine(s.line)
			s.line = nil
		}
		s.decide()
	}
}

// forged reports whether a field is an Authentication-Results with our
// authserv-id.
func (s *stripper) forged(f []byte) bool {
	name, v, ok := bytes.Cut(f, []byte(":"))
	if !ok || !strings.EqualFold(strings.TrimSpace(string(name)), "authentication-results") {
		return false
	}
	return strings.EqualFold(authservIDOf(string(v)), s.id)
}

// authservIDOf returns the authserv-id of an Authentication-Results value,
// skipping whitespace and comments.
func authservIDOf(v string) string {
	v = skipCFWS(v)
	end := strings.IndexAny(v, "; \t\r\n(")
	if end < 0 {
		end = len(v)
	}
	return strings.Trim(v[:end], `"`)
}

func skipCFWS(v string) string {
	for {
		v = strings.TrimLeft(v, " \t\r\n")
		if !strings.HasPrefix(v, "(") {
			return v
		}
		depth := 0
		i := 0
		for ; i < len(v); i++ {
			if v[i] == '\\' {
				i++
				continue
			}
			if v[i] == '(' {
				depth++
			} else if v[i] == ')' {
				depth--
				if depth == 0 {
					break
				}
			}
		}
		if i >= len(v) {
			return ""
		}
		v = v[i+1:]
	}
}

// StripForgedHeader removes forged Authentication-Results fields (see
// StripForged) from a whole header section held in memory.
func StripForgedHeader(header, authservID string) string {
	b, _ := io.ReadAll(StripForged(strings.NewReader(header), authservID))
	return string(b)
}
