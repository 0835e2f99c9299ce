package relay

import (
	"bytes"
	"errors"
	"io"
)

var errTooManyReceived = errors.New("too many Received headers")

// receivedCounter passes the message through and counts Received header fields
// in its header section, failing once there are more than max: two
// forwarders that point at each other must not pass a message back and
// forth forever.
type receivedCounter struct {
	w        io.Writer
	max      int
	received int
	line     []byte // start of the current line (enough to recognise it)
	inBody   bool
	// utf8Header: a header byte is not ASCII (the message then needs
	// SMTPUTF8 if the client asked for it: the next hop must offer it).
	utf8Header bool
}

func (h *receivedCounter) Write(p []byte) (int, error) {
	if !h.inBody {
		for _, c := range p {
			if c == '\n' {
				h.endLine()
				if h.inBody {
					break
				}
				continue
			}
			if c >= 0x80 {
				h.utf8Header = true
			}
			if len(h.line) < 16 {
				h.line = append(h.line, c)
			}
		}
		if h.received > h.max {
			return 0, errTooManyReceived
		}
	}
	return h.w.Write(p)
}

func (h *receivedCounter) endLine() {
	l := bytes.TrimRight(h.line, "\r")
	switch {
	case len(l) == 0:
		h.inBody = true
	case len(l) >= 9 && bytes.EqualFold(l[:9], []byte("received:")):
		h.received++
	}
	h.line = h.line[:0]
}
