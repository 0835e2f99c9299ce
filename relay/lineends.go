package relay

import (
	"bytes"
	"io"
)

// lineEnds makes every line end of a message CRLF as it arrives: a bare
// CR or a bare LF becomes CRLF. Done once, before anything reads the
// message, so that our header parsers (StripForged, the Received counter,
// the checks) see the lines the next hop will see: the writer that sends
// the message on, and most MTAs after it, end a line at a bare CR or LF,
// and a header hidden behind one (a forged Authentication-Results, Received
// lines past the loop limit, a second From) would otherwise reach them
// unseen by us. RFC 5322 allows neither; a signature over them breaks on
// the way anyway.
type lineEnds struct {
	r       io.Reader
	cr      bool   // the last byte was a CR whose next byte is not known yet
	out     []byte // converted, not yet returned
	scratch []byte
	err     error
}

func newLineEnds(r io.Reader) *lineEnds { return &lineEnds{r: r} }

func (l *lineEnds) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(l.out) == 0 && l.err == nil {
		n := max(len(p)/2, 1) // conversion at most doubles a chunk
		if cap(l.scratch) < n {
			l.scratch = make([]byte, n)
		}
		n, l.err = l.r.Read(l.scratch[:n])
		l.convert(l.scratch[:n])
		if l.err != nil && l.cr {
			l.out, l.cr = append(l.out, '\n'), false
		}
	}
	if len(l.out) == 0 {
		return 0, l.err
	}
	n := copy(p, l.out)
	l.out = l.out[n:]
	return n, nil
}

func (l *lineEnds) convert(b []byte) {
	if !l.cr && bytes.IndexByte(b, '\r') < 0 && bytes.IndexByte(b, '\n') < 0 {
		l.out = append(l.out, b...)
		return
	}
	for _, c := range b {
		if l.cr {
			l.cr = false
			l.out = append(l.out, '\n') // CRLF, or a bare CR made one
			if c == '\n' {
				continue
			}
		}
		switch c {
		case '\r':
			l.out = append(l.out, '\r')
			l.cr = true
		case '\n':
			l.out = append(l.out, '\r', '\n') // a bare LF
		default:
			l.out = append(l.out, c)
		}
	}
}
