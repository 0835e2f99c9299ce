package auth

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"time"
)

// SignStream DKIM-signs (relaxed/relaxed) the message written to it: Write
// the whole message (header and body), then Finish returns the
// DKIM-Signature field (CRLF-terminated) to prepend. The signature covers
// From, Subject, Date, To, Cc, Message-ID, MIME and List fields as present —
// never a field mailfwd adds — so prepending other fields later keeps it
// valid. It signs as forwards are signed (dkimSignFields), with the body
// hashed as it streams.
type SignStream struct {
	key    *Key
	hdr    []byte
	fields []field
	body   *bodyHasher // nil until the header is complete
	err    error
	done   bool
}

// NewSignStream starts signing with key.
func NewSignStream(key *Key) *SignStream { return &SignStream{key: key} }

// Write never fails (an error is reported by Finish), so it can sit in an
// io.MultiWriter next to the spool.
func (s *SignStream) Write(p []byte) (int, error) {
	if s.err != nil || s.done {
		return len(p), nil
	}
	if s.body != nil {
		s.body.Write(p)
		return len(p), nil
	}
	scanned := len(s.hdr)
	s.hdr = append(s.hdr, p...)
	if end, bodyAt := headerEnd(s.hdr, scanned); end >= 0 {
		s.start(s.hdr[:end], s.hdr[bodyAt:])
		s.hdr = nil
	} else if len(s.hdr) > maxHeader {
		s.err = errors.New("dkim sign: header too large")
	}
	return len(p), nil
}

func (s *SignStream) start(header, body []byte) {
	s.fields = parseHeader(header)
	s.body = newBodyHasher(true, sha256.New())
	s.body.Write(body)
}

// Finish returns the DKIM-Signature field.
func (s *SignStream) Finish() (string, error) {
	if s.done {
		return "", errors.New("dkim sign: already finished")
	}
	if s.body == nil && s.err == nil {
		// a message without body separator: all header
		h := s.hdr
		if len(h) > 0 && h[len(h)-1] != '\n' {
			h = append(h, '\r', '\n')
		}
		s.start(h, nil)
	}
	s.done = true
	if s.err != nil {
		return "", s.err
	}
	return dkimSignFields(s.key, time.Now(), s.fields, s.body.sumOnce())
}

// Sign reads a whole message and returns its DKIM-Signature field.
func Sign(key *Key, msg io.Reader) (string, error) {
	s := NewSignStream(key)
	if _, err := io.Copy(s, msg); err != nil {
		return "", err
	}
	return s.Finish()
}

// maxHeader bounds the header section we analyse (256 KiB; Postfix keeps
// 100 KiB, header_size_limit): beyond, the checks say permerror and the
// message is neither verified nor signed. It bounds each session's copies.
const maxHeader = 256 << 10

// headerEnd finds the blank line ending the header section in b, looking
// from offset from. It returns the end of the header fields (after the
// last field's line end) and where the body starts, or -1.
func headerEnd(b []byte, from int) (int, int) {
	if bytes.HasPrefix(b, []byte("\r\n")) {
		return 0, 2
	}
	if bytes.HasPrefix(b, []byte("\n")) {
		return 0, 1
	}
	if from -= 2; from < 0 {
		from = 0
	}
	for i := from; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		rest := b[i+1:]
		if bytes.HasPrefix(rest, []byte("\r\n")) {
			return i + 1, i + 3
		}
		if len(rest) > 0 && rest[0] == '\n' {
			return i + 1, i + 2
		}
	}
	return -1, -1
}
