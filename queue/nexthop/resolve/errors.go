package resolve

import (
	"errors"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// The classes of a failed lookup; test with errors.Is. A name that exists
// but has no records of the asked type (NOERROR, empty answer) is not an
// error: the lookup returns an empty result.
var (
	// ErrNotFound is NXDOMAIN: the name does not exist, a permanent answer.
	ErrNotFound = errors.New("name not found")
	// ErrTemporary is everything that may succeed later: SERVFAIL
	// (including DNSSEC-bogus answers), REFUSED, other error codes,
	// timeouts, network errors and cancelled contexts.
	ErrTemporary = errors.New("temporary DNS failure")
)

// Error describes a failed lookup. It unwraps to its Kind (ErrNotFound or
// ErrTemporary) and to its cause, so errors.Is(err, context.DeadlineExceeded)
// works too.
type Error struct {
	Name  string // the name queried, without the trailing dot
	Type  string // the query type, "MX", "A", ...
	Rcode int    // the response code of the last answer, -1 if none arrived
	Kind  error  // ErrNotFound or ErrTemporary
	Err   error  // the cause (network, context, ...), may be nil
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("dns: ")
	b.WriteString(e.Type)
	b.WriteByte(' ')
	b.WriteString(e.Name)
	b.WriteString(": ")
	b.WriteString(e.Kind.Error())
	if e.Rcode >= 0 {
		b.WriteString(" (")
		b.WriteString(rcodeString(e.Rcode))
		b.WriteByte(')')
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap makes errors.Is see both the class and the cause.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

func newError(kind error, name string, qtype uint16, rcode int, cause error) *Error {
	return &Error{
		Name:  strings.TrimSuffix(name, "."),
		Type:  dns.TypeToString[qtype],
		Rcode: rcode,
		Kind:  kind,
		Err:   cause,
	}
}

func rcodeString(rcode int) string {
	if s, ok := dns.RcodeToString[rcode]; ok {
		return s
	}
	return "RCODE" + strconv.Itoa(rcode)
}
