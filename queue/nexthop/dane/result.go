package dane

import (
	"fmt"
	"strings"
)

// Result is a host's secure TLSA RRset sorted for delivery and for words.
type Result struct {
	Records []Record // the RRset as the caller found it
	Usable  []Record // those usable for SMTP, which Config verifies with
}

// Evaluate sorts records into a Result.
func Evaluate(records []Record) Result {
	return Result{Records: records, Usable: Usable(records)}
}

// Authenticated reports whether TLS to the host is to be authenticated
// (Config with r.Usable). Records but none usable: TLS is still required,
// without authentication (see the package doc).
func (r Result) Authenticated() bool { return len(r.Usable) > 0 }

// String is the RRset for logs and "mailfwd lookup -v":
//
//	DANE: 2 usable TLSA records (3 1 1, 2 0 1)
//	DANE: 1 usable TLSA record (3 1 1), 1 unusable (0 0 1: PKIX usage)
//	DANE: 1 TLSA record, none usable (1 1 1: PKIX usage): TLS required, not authenticated
func (r Result) String() string {
	all := r.Records
	if len(all) == 0 {
		all = r.Usable
	}
	var bad []Record
	for _, rec := range all {
		if unusable(rec) != "" {
			bad = append(bad, rec)
		}
	}
	switch {
	case len(all) == 0:
		return "DANE: no TLSA records"
	case len(r.Usable) == 0:
		return fmt.Sprintf("DANE: %s, none usable (%s): TLS required, not authenticated", count(len(all), "TLSA record"), list(bad, true))
	case len(bad) == 0:
		return fmt.Sprintf("DANE: %s (%s)", count(len(r.Usable), "usable TLSA record"), list(r.Usable, false))
	}
	return fmt.Sprintf("DANE: %s (%s), %d unusable (%s)", count(len(r.Usable), "usable TLSA record"), list(r.Usable, false), len(bad), list(bad, true))
}

// Describe is Evaluate(records).String(): given only usable records, as
// "DANE: 2 usable TLSA records (3 1 1, 2 0 1)".
func Describe(records []Record) string { return Evaluate(records).String() }

func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// list is records' parameters, with why each is unusable if why.
func list(records []Record, why bool) string {
	s := make([]string, len(records))
	for i, r := range records {
		s[i] = r.String()
		if why {
			s[i] += ": " + unusable(r)
		}
	}
	return strings.Join(s, ", ")
}
