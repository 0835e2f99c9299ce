package smtp

import (
	"bytes"
	"errors"
	"io"
)

var ErrTooLongLine = errors.New("smtp: too long a line in input stream")

// lineLimitReader reads from the underlying Reader but restricts
// line length of lines in input stream to a certain length.
//
// If line length exceeds the limit - Read returns ErrTooLongLine
type lineLimitReader struct {
	R         io.Reader
	LineLimit int

	curLineLength int
}

func (r *lineLimitReader) Read(b []byte) (int, error) {
	if r.curLineLength > r.LineLimit && r.LineLimit > 0 {
		return 0, ErrTooLongLine
	}

	n, err := r.R.Read(b)
	if err != nil {
		return n, err
	}

	if r.LineLimit == 0 {
		return n, nil
	}

	// curLineLength counts the bytes since the last '\n', that one
	// included. Rather than measure every line, look at windows of the
	// length still allowed: the last '\n' in each must exist, and the
	// lines before it are shorter than the window.
	rest := b[:n]
	for {
		allowed := r.LineLimit - r.curLineLength // bytes before the next '\n'
		if len(rest) <= allowed {
			if i := bytes.LastIndexByte(rest, '\n'); i >= 0 {
				r.curLineLength = len(rest) - i
			} else {
				r.curLineLength += len(rest)
			}
			break
		}
		i := bytes.LastIndexByte(rest[:allowed+1], '\n')
		if i < 0 {
			r.curLineLength = r.LineLimit + 1 // sticky: later reads fail too
			return 0, ErrTooLongLine
		}
		r.curLineLength = 1
		rest = rest[i+1:]
	}

	return n, nil
}
