//go:build e2e

package e2e

// Reading what smtp-sink (Postfix's test SMTP server, started by
// scripts/start-sink.sh) captured: one file per mail transaction with -d,
// or several transactions appended to one file with -D. Each transaction is
//
//	X-Client-Addr: 127.0.0.1
//	X-Client-Proto: ESMTP
//	X-Helo-Args: postfix.test                 (only after HELO/EHLO)
//	X-Mail-Args: <a@example.org> BODY=8BITMIME  (everything after "MAIL FROM:")
//	X-Rcpt-Args: <x@domain.ro> ORCPT=rfc822;x@domain.ro   (one per RCPT, in order)
//	Received: from postfix.test ([127.0.0.1])
//		by smtp-sink.test (smtp-sink) with ESMTP id 5896bd70;
//		Tue, 24 Nov 2026 21:29:18 +0000 (UTC)
//	<the message as received: CRs removed, dot-stuffing undone>
//	<one empty line>
//
// smtp-sink creates the file at MAIL FROM, writes it through a buffer and
// closes it before it answers 250 to the final dot; an aborted transaction's
// file is deleted. So every message Postfix logged as status=sent is complete
// on disk. A file still being written (empty, or without the end yet) is
// skipped, not reported as an error: poll until the expected count is there.

import (
	"bytes"
	"fmt"
	"io/fs"
	"net/textproto"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Dumped is one mail transaction captured by smtp-sink.
type Dumped struct {
	File       string    // dump file it was read from
	ModTime    time.Time // the file's modification time (≈ end of DATA for -d)
	ID         string    // smtp-sink's id (Received: "... id ID;", the -d file name's suffix)
	ClientAddr string    // X-Client-Addr (the SMTP client, e.g. Postfix: 127.0.0.1)
	Helo       string    // X-Helo-Args (the client's HELO/EHLO name), "" if none

	MailFrom string   // envelope sender without <> and parameters; "" for the null sender <>
	MailArgs string   // X-Mail-Args verbatim: "<a@example.org> BODY=8BITMIME"
	Rcpts    []string // envelope recipients in RCPT order, without <> and parameters
	RcptArgs []string // X-Rcpt-Args verbatim, e.g. "<x@y> ORCPT=rfc822;x@y"

	// The message as received (after smtp-sink's own Received: header).
	Header    textproto.MIMEHeader // parsed fields (unfolded, canonical keys, in order per key)
	RawHeader string               // header block verbatim, "\n" line ends, no blank separator line
	Body      []byte               // everything after the blank line that ends the header
	Raw       []byte               // header + blank line + body, "\n" line ends
}

// dumpCache keeps each file's parse while its size and modification time
// stay the same: a -d file never changes once complete, a -D file grows.
// Tests poll the shared sink ten times a second while it holds thousands of
// messages (the crash harness's); reading and parsing them all again on
// every poll took whole cores and slowed every later test several times.
var dumpCache = struct {
	sync.Mutex
	files map[string]cachedDump
}{files: map[string]cachedDump{}}

type cachedDump struct {
	size int64
	mod  time.Time
	msgs []Dumped
}

// ReadSinkDumps reads every file under dir (recursively) and returns the
// complete transactions in them, oldest file first (by modification time,
// then name; messages of a -D file in file order).
func ReadSinkDumps(dir string) ([]Dumped, error) {
	type file struct {
		path string
		mod  time.Time
		size int64
	}
	var files []file
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if os.IsNotExist(err) { // deleted meanwhile (aborted transaction)
				return nil
			}
			return err
		}
		files = append(files, file{path, info.ModTime(), info.Size()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read sink dumps: %w", err)
	}
	sort.SliceStable(files, func(i, j int) bool {
		if !files[i].mod.Equal(files[j].mod) {
			return files[i].mod.Before(files[j].mod)
		}
		return files[i].path < files[j].path
	})
	var out []Dumped
	dumpCache.Lock()
	defer dumpCache.Unlock()
	for _, f := range files {
		if c, ok := dumpCache.files[f.path]; ok && c.size == f.size && c.mod.Equal(f.mod) {
			out = append(out, c.msgs...)
			continue
		}
		data, err := os.ReadFile(f.path)
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return nil, fmt.Errorf("read sink dumps: %w", err)
		}
		msgs, err := ParseSinkDump(data)
		if err != nil {
			return nil, fmt.Errorf("sink dump %s: %w", f.path, err)
		}
		for i := range msgs {
			msgs[i].File = f.path
			msgs[i].ModTime = f.mod
		}
		if int64(len(data)) == f.size {
			dumpCache.files[f.path] = cachedDump{f.size, f.mod, msgs}
		}
		out = append(out, msgs...)
	}
	return out, nil
}

// ParseSinkDump parses the content of one dump file: one transaction (-d) or
// several appended ones (-D). An unfinished last transaction is left out.
func ParseSinkDump(data []byte) ([]Dumped, error) {
	lines := splitLines(data)
	// A transaction starts with X-Client-Addr followed by X-Client-Proto, at
	// the start of the file or right after the empty line that ends the
	// previous one. (A body holding exactly that pair after an empty line
	// would be split wrongly; with -d files nothing is split at all.)
	var starts []int
	for i := 0; i+1 < len(lines); i++ {
		if strings.HasPrefix(lines[i].text, "X-Client-Addr: ") &&
			strings.HasPrefix(lines[i+1].text, "X-Client-Proto: ") &&
			(len(starts) == 0 || lines[i-1].text == "") {
			starts = append(starts, i)
		}
	}
	var out []Dumped
	for n, s := range starts {
		end := len(data)
		if n+1 < len(starts) {
			end = lines[starts[n+1]].off
		}
		d, complete, err := parseOne(data[lines[s].off:end])
		if err != nil {
			return nil, err
		}
		if !complete {
			if n+1 < len(starts) {
				return nil, fmt.Errorf("transaction %d is truncated", n+1)
			}
			break // still being written
		}
		out = append(out, d)
	}
	return out, nil
}

type line struct {
	off  int    // offset of the line in the data
	text string // without "\n"
}

func splitLines(data []byte) []line {
	var ls []line
	for off := 0; off < len(data); {
		i := bytes.IndexByte(data[off:], '\n')
		if i < 0 {
			ls = append(ls, line{off, string(data[off:])})
			break
		}
		ls = append(ls, line{off, string(data[off : off+i])})
		off += i + 1
	}
	return ls
}

// parseOne parses one transaction. complete is false when the data ends
// before the message does (no Received: line yet, or no final empty line).
func parseOne(chunk []byte) (d Dumped, complete bool, err error) {
	rest := chunk
	next := func() (string, bool) {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return "", false
		}
		l := string(rest[:i])
		rest = rest[i+1:]
		return l, true
	}
	// smtp-sink's records, up to and including its 3-line Received: header
records:
	for {
		l, ok := next()
		if !ok {
			return d, false, nil
		}
		name, value, _ := strings.Cut(l, ": ")
		switch name {
		case "X-Client-Addr":
			d.ClientAddr = value
		case "X-Client-Proto":
		case "X-Helo-Args":
			d.Helo = value
		case "X-Mail-Args":
			d.MailArgs = value
			d.MailFrom = envelopeAddr(value)
		case "X-Rcpt-Args":
			d.RcptArgs = append(d.RcptArgs, value)
			d.Rcpts = append(d.Rcpts, envelopeAddr(value))
		case "Received":
			by, ok1 := next()
			_, ok2 := next()
			if !ok1 || !ok2 {
				return d, false, nil
			}
			if i := strings.Index(by, " id "); i >= 0 {
				d.ID = strings.TrimSuffix(strings.TrimSpace(by[i+4:]), ";")
			}
			break records
		default:
			return d, false, fmt.Errorf("unexpected smtp-sink record %q", l)
		}
	}
	if d.MailArgs == "" || len(d.Rcpts) == 0 {
		return d, false, fmt.Errorf("transaction without X-Mail-Args or X-Rcpt-Args")
	}
	// The message ends with "\n" (its last line) plus the "\n" smtp-sink
	// writes for the final ".\r\n": drop that one.
	if !bytes.HasSuffix(rest, []byte("\n\n")) && !bytes.Equal(rest, []byte("\n")) {
		return d, false, nil
	}
	d.Raw = append([]byte(nil), rest[:len(rest)-1]...)
	d.RawHeader, d.Body = splitMessage(d.Raw)
	d.Header = parseHeader(d.RawHeader)
	return d, true, nil
}

// splitMessage splits at the first empty line. A line that is neither a
// header field nor a continuation also ends the header (the body starts there).
func splitMessage(msg []byte) (header string, body []byte) {
	off := 0
	for off < len(msg) {
		i := bytes.IndexByte(msg[off:], '\n')
		l := msg[off:]
		if i >= 0 {
			l = msg[off : off+i]
		}
		switch {
		case len(l) == 0:
			return string(msg[:off]), msg[off+1:]
		case l[0] == ' ' || l[0] == '\t':
			if off == 0 {
				return "", msg
			}
		case !isFieldLine(l):
			return string(msg[:off]), msg[off:]
		}
		if i < 0 {
			return string(msg), nil
		}
		off += i + 1
	}
	return string(msg), nil
}

func isFieldLine(l []byte) bool {
	i := bytes.IndexByte(l, ':')
	if i <= 0 {
		return false
	}
	for _, c := range l[:i] {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// parseHeader unfolds and splits the header block; lines are kept in order.
func parseHeader(raw string) textproto.MIMEHeader {
	h := textproto.MIMEHeader{}
	var fields []string
	for _, l := range strings.Split(strings.TrimSuffix(raw, "\n"), "\n") {
		if l == "" {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1] += " " + strings.TrimSpace(l)
			continue
		}
		fields = append(fields, l)
	}
	for _, f := range fields {
		name, value, ok := strings.Cut(f, ":")
		if !ok {
			continue
		}
		key := textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(name))
		h[key] = append(h[key], strings.TrimSpace(value))
	}
	return h
}

// envelopeAddr returns the address of MAIL/RCPT arguments: the text inside
// <...> (quoted local parts may contain '>'), or the first word without <>.
func envelopeAddr(args string) string {
	args = strings.TrimSpace(args)
	if !strings.HasPrefix(args, "<") {
		addr, _, _ := strings.Cut(args, " ")
		return addr
	}
	inQuote := false
	for i := 1; i < len(args); i++ {
		switch c := args[i]; {
		case c == '\\' && inQuote:
			i++
		case c == '"':
			inQuote = !inQuote
		case c == '>' && !inQuote:
			return args[1:i]
		}
	}
	return strings.TrimPrefix(args, "<") // unbalanced: best effort
}

// CountRcpts counts deliveries per envelope recipient (lowercased) over all
// dumps: a recipient delivered twice (in one transaction or two) counts 2.
func CountRcpts(dumps []Dumped) map[string]int {
	n := map[string]int{}
	for _, d := range dumps {
		for _, r := range d.Rcpts {
			n[strings.ToLower(r)]++
		}
	}
	return n
}
