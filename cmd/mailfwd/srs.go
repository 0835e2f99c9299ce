package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"mailfwd/routing"
)

const srsUsage = `usage: mailfwd srs forward|reverse -secrets FILE -domain SRSDOMAIN [flags] ADDRESS

forward  prints the rewritten sender, or ADDRESS unchanged when no rewrite
         applies (null sender, a sender in SRSDOMAIN, an address already
         rewritten by us); exit 0. A refused sender: message on stderr, exit 1.
reverse  prints the address an SRS address of SRSDOMAIN decodes to, or ADDRESS
         unchanged when it is not SRS or not in SRSDOMAIN; exit 0. An invalid,
         expired or malformed SRS address: message on stderr, exit 1.

The secrets file holds one secret per line: the first signs, all verify.
Exit 2: usage error.

flags:
`

// srsCommand is `mailfwd srs forward|reverse`.
func srsCommand(args []string) error { return srsRun(args, os.Stdout, os.Stderr) }

func srsRun(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "forward" && args[0] != "reverse") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			fmt.Fprint(stdout, srsUsage)
			return nil
		}
		fmt.Fprint(stderr, srsUsage)
		return errExit{2, "want forward or reverse"}
	}
	mode := args[0]
	fs := flag.NewFlagSet("srs "+mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, srsUsage); fs.PrintDefaults() }
	secrets := fs.String("secrets", "", "secrets file, one secret per line (required)")
	domain := fs.String("domain", "", "the SRS domain (required)")
	nowStr := fs.String("now", "", "the time: RFC 3339, or YYYY-MM-DD meaning 12:00 UTC (default: now)")
	sep := fs.String("separator", "=", "initial separator: = + or -")
	hashLen := fs.Int("hash-length", routing.DefaultSRSHashLength, "hash characters to emit")
	hashMin := fs.Int("hash-min", routing.DefaultSRSHashMin, "fewest hash characters to accept")
	maxAge := fs.Int("max-age", routing.DefaultSRSMaxAgeDays, "days a stamp stays valid")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errExit{2, err.Error()}
	}
	if fs.NArg() != 1 {
		return errExit{2, "want exactly one ADDRESS"}
	}
	if *secrets == "" || *domain == "" {
		return errExit{2, "-secrets and -domain are required"}
	}
	if len(*sep) != 1 {
		return errExit{2, fmt.Sprintf("-separator %q: want one of = + -", *sep)}
	}
	now := time.Now
	if *nowStr != "" {
		t, err := parseSRSNow(*nowStr)
		if err != nil {
			return errExit{2, err.Error()}
		}
		now = func() time.Time { return t }
	}
	keys, err := routing.LoadSRSSecrets(*secrets)
	if err != nil {
		return errExit{1, err.Error()}
	}
	s := &routing.SRS{Secrets: keys, Domain: *domain, Separator: (*sep)[0],
		HashLength: *hashLen, HashMin: *hashMin, MaxAgeDays: *maxAge, Now: now}
	if *hashLen < 1 || *hashMin < 1 || *maxAge < 1 { // 0 would mean "default" to routing.SRS
		return errExit{2, "-hash-length, -hash-min and -max-age must be at least 1"}
	}
	if err := s.Validate(); err != nil {
		return errExit{2, err.Error()}
	}
	addr := fs.Arg(0)
	var out string
	if mode == "forward" {
		out, err = s.Forward(addr)
	} else {
		out, err = s.Reverse(addr)
		if errors.Is(err, routing.ErrNotSRS) {
			out, err = addr, nil // an ordinary address passes through
		}
	}
	if err != nil {
		return errExit{1, fmt.Sprintf("%s %q: %v", mode, addr, err)}
	}
	fmt.Fprintln(stdout, out)
	return nil
}

// parseSRSNow reads -now: RFC 3339, or a date meaning 12:00 UTC that day.
func parseSRSNow(v string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if d, err := time.Parse("2006-01-02", v); err == nil {
		return d.Add(12 * time.Hour), nil
	}
	return time.Time{}, fmt.Errorf("-now %q: want RFC 3339 or YYYY-MM-DD", v)
}
