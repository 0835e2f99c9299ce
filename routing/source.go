package routing

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// ErrUnavailable marks a temporary failure of a directory source (down,
// timing out, refusing us). Callers answer 4xx for it, never 5xx.
var ErrUnavailable = errors.New("directory unavailable")

// ErrReplicaMiss: the directory is unreachable and its replica (confirmed
// in sync within max_stale) does not hold the key. It wraps ErrUnavailable,
// so a caller that cannot tell answers 4xx. The expander treats it as "not
// in the directory" for the results of an alias (the replica held every
// entry at its last sync: a known user's forwarding completes during an
// outage), and as a temporary failure when it would make the RCPT address
// itself unknown (451, never 550).
var ErrReplicaMiss = fmt.Errorf("%w: not in the directory replica", ErrUnavailable)

// Match is one value a source returned for a key, and where it came from
// (for `mailfwd lookup -v`).
type Match struct {
	Value     string
	Source    string // "ldap ldap://host", "ldif FILE", "static"
	DN        string
	Attribute string
}

// Source is one directory. Lookup returns what key rewrites to; no matches
// and a nil error mean key is not in the directory. A Source that cannot
// answer returns an error wrapping ErrUnavailable.
type Source interface {
	Lookup(ctx context.Context, key string) ([]Match, error)
}

// Values returns the values of ms.
func Values(ms []Match) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Value
	}
	return out
}

// DomainRewrites is a static source answering "@old.example" with
// "@new.example": a whole-domain migration without a directory entry. Keys
// are compared in lower-case A-label form.
type DomainRewrites map[string]string

// Lookup implements Source.
func (d DomainRewrites) Lookup(_ context.Context, key string) ([]Match, error) {
	dom, ok := strings.CutPrefix(key, "@")
	if !ok {
		return nil, nil
	}
	n, err := NormalizeDomain(dom)
	if err != nil {
		return nil, nil
	}
	if to, ok := d[n]; ok {
		return []Match{{Value: "@" + to, Source: "domain_rewrites", Attribute: n}}, nil
	}
	return nil, nil
}
