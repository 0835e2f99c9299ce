package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"mailfwd/config"
	"mailfwd/routing/srs"
	"mailfwd/routing/srsstore"
)

const srsUsage = `usage: mailfwd srs forward|reverse -secrets FILE -domain SRSDOMAIN [flags] ADDRESS
       mailfwd srs import-postsrsd (-store FILE | -redis HOST:PORT) [-max-age DAYS] < DUMP

forward  prints the rewritten sender, or ADDRESS unchanged when no rewrite
         applies (null sender, a sender in SRSDOMAIN, an address already
         rewritten by us); exit 0. A refused sender: message on stderr, exit 1.
         A sender that does not fit gets the database form with -store or
         -redis; without, it is refused.
reverse  prints the address an SRS address of SRSDOMAIN decodes to; exit 0.
         An address that is not SRS, not in SRSDOMAIN, invalid, expired or
         malformed: message on stderr, exit 1 (as postsrsd and Mail::SRS).
         Legacy (postsrsd-compatible) hashes verify for stamps minted on or
         before -legacy-until (default: the -now day; "none": never).
import-postsrsd
         stores the senders of a postsrsd 2.x sqlite envelope database in our
         store, so bounces to the addresses it minted keep reversing. DUMP is
         its kv table as tab-separated k, v, lt lines:
           sqlite3 -separator "$(printf '\t')" /var/lib/postsrsd/postsrsd.db 'SELECT k, v, lt FROM kv'
         Stop mailfwd first when -store is its Bolt file (one process at a time).

The secrets file holds one secret per line: the first signs, all verify.
Exit 2: usage error.

flags:
`

// srsCommand is `mailfwd srs forward|reverse|import-postsrsd`.
func srsCommand(args []string) error { return srsRun(args, os.Stdin, os.Stdout, os.Stderr) }

func srsRun(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "forward" && args[0] != "reverse" && args[0] != "import-postsrsd") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			fmt.Fprint(stdout, srsUsage)
			return nil
		}
		fmt.Fprint(stderr, srsUsage)
		return errExit{2, "want forward, reverse or import-postsrsd"}
	}
	mode := args[0]
	fs := flag.NewFlagSet("srs "+mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, srsUsage); fs.PrintDefaults() }
	secrets := fs.String("secrets", "", "secrets file, one secret per line (required)")
	domain := fs.String("domain", "", "the SRS domain (required)")
	nowStr := fs.String("now", "", "the time: RFC 3339, or YYYY-MM-DD meaning 12:00 UTC (default: now)")
	def := config.Defaults().SRS // the flags default as the config does
	sep := fs.String("separator", def.Separator, "initial separator: = + or -")
	hashLen := fs.Int("hash-length", def.HashLength, "hash characters to emit")
	hashMin := fs.Int("hash-min", def.HashMin, "fewest hash characters to accept")
	maxAge := fs.Int("max-age", def.MaxAgeDays, "days a stamp stays valid")
	legacy := fs.String("legacy-until", "", "cut-over day YYYY-MM-DD for legacy hashes, or none (default: the -now day)")
	storePath := fs.String("store", "", "a Bolt sender store (as srs.store.path)")
	redisAddr := fs.String("redis", "", "a Redis sender store host:port (as srs.store.redis)")
	redisPrefix := fs.String("redis-prefix", def.Store.Redis.KeyPrefix, "Redis key prefix")
	database := fs.Bool("database", false, "the database form for every ordinary sender (srs.database: always)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errExit{2, err.Error()}
	}
	now := time.Now
	if *nowStr != "" {
		t, err := parseSRSNow(*nowStr)
		if err != nil {
			return errExit{2, err.Error()}
		}
		now = func() time.Time { return t }
	}
	if *maxAge < 1 {
		return errExit{2, "-max-age must be at least 1"}
	}
	var store srs.Store
	switch {
	case *storePath != "" && *redisAddr != "":
		return errExit{2, "-store and -redis are exclusive"}
	case *storePath != "":
		st, err := srsstore.OpenBoltClock(*storePath, *maxAge, now)
		if err != nil {
			return errExit{1, err.Error()}
		}
		defer st.Close()
		store = st
	case *redisAddr != "":
		st, err := srsstore.NewRedis(srsstore.RedisOptions{Addr: *redisAddr, Prefix: *redisPrefix,
			Timeout: def.Store.Redis.Timeout, MaxAgeDays: *maxAge})
		if err != nil {
			return errExit{2, err.Error()}
		}
		defer st.Close()
		store = st
	}
	if mode == "import-postsrsd" {
		if store == nil {
			return errExit{2, "import-postsrsd: -store or -redis is required"}
		}
		n, err := importPostsrsd(stdin, store, *maxAge, now())
		if err != nil {
			return errExit{1, fmt.Sprintf("import-postsrsd: %v (%d imported before)", err, n)}
		}
		fmt.Fprintf(stdout, "imported %d senders\n", n)
		return nil
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
	keys, err := srs.LoadSecrets(*secrets)
	if err != nil {
		return errExit{1, err.Error()}
	}
	s := &srs.Rewriter{Secrets: keys, Domain: *domain, Separator: (*sep)[0],
		HashLength: *hashLen, HashMin: *hashMin, MaxAgeDays: *maxAge, Now: now, Store: store, DatabaseAlways: *database}
	switch *legacy {
	case "":
		s.LegacyUntil = now()
	case "none":
	default:
		d, err := time.Parse("2006-01-02", *legacy)
		if err != nil {
			return errExit{2, fmt.Sprintf("-legacy-until %q: want YYYY-MM-DD or none", *legacy)}
		}
		s.LegacyUntil = d
	}
	if *hashLen < 1 || *hashMin < 1 { // said with the flags' names, before Validate says it in the codec's
		return errExit{2, "-hash-length, -hash-min and -max-age must be at least 1"}
	}
	if err := s.Validate(); err != nil {
		return errExit{2, err.Error()}
	}
	how := ""
	s.Observe = func(_, result string) { how = result }
	addr := fs.Arg(0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out string
	if mode == "forward" {
		out, err = s.Forward(ctx, addr)
	} else {
		out, err = s.Reverse(ctx, addr)
	}
	if err != nil {
		return errExit{1, fmt.Sprintf("%s %q: %v", mode, addr, err)}
	}
	switch how {
	case "legacy":
		fmt.Fprintf(stderr, "note: legacy hash, accepted for stamps minted on or before %s\n", s.LegacyUntil.Format("2006-01-02"))
	case "database":
		fmt.Fprintln(stderr, "note: database form (the sender is in the store)")
	}
	fmt.Fprintln(stdout, out)
	return nil
}

// postsrsdKeyDays is the lifetime postsrsd 2.x (on its defaults) gives a
// database key, which its lt column counts from the forward.
const postsrsdKeyDays = 21

// importPostsrsd stores the k, v, lt rows of postsrsd's kv table. A key
// (<KEY>@1) may have been minted on any day of the SRS lifetime before its
// lt (postsrsd renews lt each time it forwards the sender again), so each
// sender is stored for every such day.
func importPostsrsd(r io.Reader, store srs.Store, maxAge int, now time.Time) (int, error) {
	ctx := context.Background()
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	n := 0
	today := now.Unix() / 86400
	for line := 1; sc.Scan(); line++ {
		l := strings.TrimRight(sc.Text(), "\r")
		if l == "" {
			continue
		}
		f := strings.Split(l, "\t")
		if len(f) != 3 {
			return n, fmt.Errorf("line %d: want k, v and lt separated by tabs", line)
		}
		key, ok := strings.CutSuffix(f[0], "@1")
		if !ok || len(key) != 32 || f[1] == "" {
			return n, fmt.Errorf("line %d: %q is not a postsrsd database key", line, f[0])
		}
		lt, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return n, fmt.Errorf("line %d: lt %q: %v", line, f[2], err)
		}
		last := lt/86400 - postsrsdKeyDays // postsrsd: lt = forward time + 21 days
		if last < today-int64(maxAge) {
			continue // expired
		}
		for d := last - int64(maxAge); d <= last; d++ {
			if d < today-int64(maxAge) {
				continue
			}
			if err := store.Put(ctx, strings.ToUpper(key), f[1], d); err != nil {
				return n, err
			}
		}
		n++
	}
	return n, sc.Err()
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
