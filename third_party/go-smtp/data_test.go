package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// unstuff is RFC 5321 section 4.5.2 read literally: the data is a sequence
// of lines ended by CRLF, the line "." ends it, and any other line that
// starts with '.' loses that dot. ok is false when the input has no end.
func unstuff(in []byte) (out, rest []byte, ok bool) {
	for {
		i := bytes.Index(in, []byte("\r\n"))
		if i < 0 {
			return out, nil, false
		}
		line := in[:i]
		in = in[i+2:]
		if string(line) == "." {
			return out, in, true
		}
		if len(line) > 0 && line[0] == '.' {
			line = line[1:]
		}
		out = append(out, line...)
		out = append(out, "\r\n"...)
	}
}

// readData runs the data reader over in, delivered wrap-ed, with reads
// of size bufSize, and returns what it produced and what it left unread.
func readData(in []byte, wrap func(io.Reader) io.Reader, bufSize int) (out, rest []byte, err error) {
	br := bufio.NewReaderSize(wrap(bytes.NewReader(in)), 16)
	dr := &dataReader{r: br}
	buf := make([]byte, bufSize)
	for {
		n, rerr := dr.Read(buf)
		out = append(out, buf[:n]...)
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return out, nil, rerr
		}
	}
	rest, _ = io.ReadAll(br)
	return out, rest, nil
}

func checkDataReader(t *testing.T, in []byte) {
	t.Helper()
	want, wantRest, ok := unstuff(in)
	wraps := map[string]func(io.Reader) io.Reader{
		"whole":   func(r io.Reader) io.Reader { return r },
		"onebyte": iotest.OneByteReader,
		"half":    iotest.HalfReader,
	}
	for name, wrap := range wraps {
		for _, size := range []int{1, 3, 64, 4096} {
			got, rest, err := readData(in, wrap, size)
			if !ok {
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("%q (%s, %d): err %v, want unexpected EOF", in, name, size, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%q (%s, %d): %v", in, name, size, err)
			}
			if !bytes.Equal(got, want) || !bytes.Equal(rest, wantRest) {
				t.Fatalf("%q (%s, %d): got %q rest %q, want %q rest %q", in, name, size, got, rest, want, wantRest)
			}
		}
	}
}

func TestDataReader(t *testing.T) {
	for _, in := range []string{
		".\r\n",
		"a\r\n.\r\n",
		"..\r\n.\r\n",
		"..a\r\n...\r\n.\r\nQUIT\r\n",
		".a\r\nb\r\n.\r\nMAIL FROM:<x>\r\n",
		// a CR that is not a line end stays, even after a leading dot
		".\rX\r\n.\r\n",
		".\r\r\n.\r\n",
		"a\rb\r\n.\r\n",
		// a CR before the CRLF does not hide the end of the data
		"a\r\r\n.\r\nRSET\r\n",
		"\r\r\r\n.\r\n",
		// a bare LF does not end a line: these dots are data
		"a\n.\r\nb\r\n.\r\n",
		"a\r\n.\n.\r\n",
		"a\r\n.\r.\r\n.\r\n",
		// no end
		"",
		"a\r\n",
		"a\r\n.",
		"a\r\n.\r",
		"a\r\n.\n",
	} {
		checkDataReader(t, []byte(in))
	}
}

func FuzzDataReader(f *testing.F) {
	for _, s := range []string{".\r\n", "a\r\n..b\r\n.\r\nX", ".\rX\r\n.\r\n", "a\r\r\n.\r\n", "\n.\n.\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) { checkDataReader(t, in) })
}

func TestDataReaderSizeLimit(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789\r\n"), 100)
	in := append(append([]byte{}, body...), ".\r\n"...)
	for _, tc := range []struct {
		limit int64
		err   error
	}{{int64(len(body)) - 1, ErrDataTooLarge}, {int64(len(body)) + 1, nil}} {
		dr := &dataReader{r: bufio.NewReader(bytes.NewReader(in)), limited: true, n: tc.limit}
		_, err := io.Copy(io.Discard, dr)
		if !errors.Is(err, tc.err) {
			t.Errorf("limit %d: err %v, want %v", tc.limit, err, tc.err)
		}
	}
}

// byteLineLimit is the line limit as go-smtp v0.25.1 counted it, a byte at
// a time: the reference for the bulk version.
type byteLineLimit struct {
	limit, cur int
}

func (r *byteLineLimit) feed(b []byte) error {
	if r.cur > r.limit {
		return ErrTooLongLine
	}
	for _, c := range b {
		if c == '\n' {
			r.cur = 0
		}
		r.cur++
		if r.cur > r.limit {
			return ErrTooLongLine
		}
	}
	return nil
}

func FuzzLineLimitReader(f *testing.F) {
	f.Add([]byte("abc\r\ndefgh\r\n\r\nij"), uint8(5), uint8(3))
	f.Add([]byte("abcdefgh"), uint8(4), uint8(2))
	f.Fuzz(func(t *testing.T, in []byte, limit, chunk uint8) {
		if limit == 0 || chunk == 0 {
			return
		}
		ref := &byteLineLimit{limit: int(limit)}
		lr := &lineLimitReader{R: bytes.NewReader(in), LineLimit: int(limit)}
		buf := make([]byte, chunk)
		for off := 0; off < len(in); off += int(chunk) {
			end := off + int(chunk)
			if end > len(in) {
				end = len(in)
			}
			want := ref.feed(in[off:end])
			n, got := lr.Read(buf)
			if got != want {
				t.Fatalf("%q limit %d chunk %d at %d: err %v, want %v", in, limit, chunk, off, got, want)
			}
			if got == nil && n != end-off {
				t.Fatalf("read %d, want %d", n, end-off)
			}
		}
	})
}
