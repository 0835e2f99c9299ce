package smtp

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

type EnhancedCode [3]int

// SMTPError specifies the error code, enhanced error code (if any) and
// message returned by the server.
type SMTPError struct {
	Code         int
	EnhancedCode EnhancedCode
	Message      string
}

// NoEnhancedCode is used to indicate that enhanced error code should not be
// included in response.
//
// Note that RFC 2034 requires an enhanced code to be included in all 2xx, 4xx
// and 5xx responses. This constant is exported for use by extensions, you
// should probably use EnhancedCodeNotSet instead.
var NoEnhancedCode = EnhancedCode{-1, -1, -1}

// EnhancedCodeNotSet is a nil value of EnhancedCode field in SMTPError, used
// to indicate that backend failed to provide enhanced status code. X.0.0 will
// be used (X is derived from error code).
var EnhancedCodeNotSet = EnhancedCode{0, 0, 0}

func (err *SMTPError) Error() string {
	s := fmt.Sprintf("SMTP error %03d", err.Code)
	if err.Message != "" {
		s += ": " + err.Message
	}
	return s
}

func (err *SMTPError) Temporary() bool {
	return err.Code/100 == 4
}

var ErrDataTooLarge = &SMTPError{
	Code:         552,
	EnhancedCode: EnhancedCode{5, 3, 4},
	Message:      "Maximum message size exceeded",
}

type dataReader struct {
	r     *bufio.Reader
	state int

	limited bool
	n       int64 // Maximum bytes remaining
}

func newDataReader(c *Conn) *dataReader {
	c.beginBody()
	dr := &dataReader{
		r: c.text.R,
	}

	if c.server.MaxMessageBytes > 0 {
		dr.limited = true
		dr.n = int64(c.server.MaxMessageBytes)
	}

	return dr
}

// Read unstuffs the DATA stream (RFC 5321 section 4.5.2): a line is ended
// by CRLF only, a leading '.' is removed, and the line "." ends the data.
// The middle of a line is copied in bulk from the buffered reader; only
// line starts with a dot and the first bytes of a buffer go through the
// state machine. Read returns what it has instead of blocking once some
// data is copied.
func (r *dataReader) Read(b []byte) (n int, err error) {
	if r.limited {
		if r.n <= 0 {
			return 0, ErrDataTooLarge
		}
		if int64(len(b)) > r.n {
			b = b[0:r.n]
		}
	}

	const (
		stateBeginLine = iota // beginning of line; initial state; must be zero
		stateDot              // read . at beginning of line
		stateCR               // read \r (possibly at end of line)
		stateData             // reading data in middle of line
		stateEOF              // reached .\r\n end marker line
	)
	for n < len(b) && r.state != stateEOF {
		if n > 0 && r.r.Buffered() == 0 {
			break
		}
		if r.state == stateData {
			if r.r.Buffered() == 0 {
				if _, err = r.r.Peek(1); err != nil {
					if err == io.EOF {
						err = io.ErrUnexpectedEOF
					}
					break
				}
			}
			buf, _ := r.r.Peek(r.r.Buffered())
			if len(buf) > len(b)-n {
				buf = buf[:len(b)-n]
			}
			// Mid-line, only a '.' right after a CRLF needs the state
			// machine: copy everything before it. Bodies without such
			// dots (base64 parts) go in one copy per buffer.
			end, next := len(buf), stateData
			for j := 0; ; {
				k := bytes.IndexByte(buf[j:], '.')
				if k < 0 {
					break
				}
				if pos := j + k; pos >= 2 && buf[pos-2] == '\r' && buf[pos-1] == '\n' {
					end, next = pos, stateBeginLine
					break
				}
				j += k + 1
			}
			if next == stateData {
				switch {
				case buf[end-1] == '\r':
					next = stateCR
				case end >= 2 && buf[end-2] == '\r' && buf[end-1] == '\n':
					next = stateBeginLine
				}
			}
			n += copy(b[n:], buf[:end])
			r.r.Discard(end)
			r.state = next
			continue
		}
		var c byte
		c, err = r.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			break
		}
		switch r.state {
		case stateBeginLine:
			switch c {
			case '.':
				r.state = stateDot
				continue
			case '\r':
				r.state = stateCR
			default:
				r.state = stateData
			}
		case stateDot:
			if c == '\r' {
				var next []byte
				next, err = r.r.Peek(1)
				if err != nil {
					if err == io.EOF {
						err = io.ErrUnexpectedEOF
					}
					break
				}
				if next[0] == '\n' {
					r.r.Discard(1)
					r.state = stateEOF
					continue
				}
				// ".\r" inside a line: the dot goes, the CR stays.
				r.state = stateCR
			} else {
				r.state = stateData
			}
		case stateCR:
			switch c {
			case '\n':
				r.state = stateBeginLine
			case '\r':
				// still a CR that may start the line end
			default:
				r.state = stateData
			}
		case stateData:
			if c == '\r' {
				r.state = stateCR
			}
		}
		if err != nil {
			break
		}
		b[n] = c
		n++
	}
	if err == nil && r.state == stateEOF {
		err = io.EOF
	}

	if r.limited {
		r.n -= int64(n)
	}
	return
}
