package routing

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrNotFound: the address is in none of our directories. At RCPT time
	// that is "550 5.1.1 unknown recipient".
	ErrNotFound = errors.New("recipient not found")
	// ErrExpansionLimit: expansion ran into a recursion, fan-out or length
	// limit. Postfix defers these ("4.6.0 Alias expansion error") rather
	// than truncate, and so do we.
	ErrExpansionLimit = errors.New("alias expansion limit exceeded")
)

// Limits are Postfix's virtual_alias_recursion_limit,
// virtual_alias_expansion_limit and virtual_alias_address_length_limit.
type Limits struct {
	Recursion     int
	Expansion     int
	AddressLength int
}

// DefaultLimits are Postfix's defaults.
var DefaultLimits = Limits{Recursion: 1000, Expansion: 1000, AddressLength: 1000}

// withDefaults fills each unset limit with Postfix's default, so that
// setting one limit does not make the others zero.
func (l Limits) withDefaults() Limits {
	if l.Recursion <= 0 {
		l.Recursion = DefaultLimits.Recursion
	}
	if l.Expansion <= 0 {
		l.Expansion = DefaultLimits.Expansion
	}
	if l.AddressLength <= 0 {
		l.AddressLength = DefaultLimits.AddressLength
	}
	return l
}

// Expander rewrites one envelope recipient into its final recipients.
type Expander struct {
	Source Source
	Limits Limits
}

// Expand returns the final recipients of addr, de-duplicated
// case-insensitively with the first in expansion order kept, each in the
// spelling of the place it came from. The order is Postfix cleanup's: the
// first result of a lookup replaces the address in place, the others are
// appended and expanded in their turn; an address that maps to itself (among
// others) is final and keeps that copy.
//
// addr itself must be in the directory, or ErrNotFound is returned: relay
// domains are ours, and an address we do not know is refused, not passed on.
func (e *Expander) Expand(ctx context.Context, addr string) ([]string, error) {
	lim := e.Limits.withDefaults()
	list := []string{addr}
	final := map[string]bool{} // addresses that expanded into themselves
	found := false
	for i := 0; i < len(list); i++ {
		if len(list) > lim.Expansion {
			return nil, fmt.Errorf("%w: %s expands to more than %d addresses", ErrExpansionLimit, addr, lim.Expansion)
		}
		for depth := 0; ; depth++ {
			cur := list[i]
			if final[addressKey(cur)] {
				break
			}
			if depth >= lim.Recursion {
				return nil, fmt.Errorf("%w: %s nests deeper than %d (alias loop?)", ErrExpansionLimit, addr, lim.Recursion)
			}
			res, err := e.Source.Lookup(ctx, cur)
			if err != nil {
				return nil, fmt.Errorf("looking up %s: %w", cur, err)
			}
			if len(res) == 0 {
				break
			}
			found = true
			for j, r := range res {
				if len(r) > lim.AddressLength {
					return nil, fmt.Errorf("%w: result for %s longer than %d octets", ErrExpansionLimit, cur, lim.AddressLength)
				}
				if j == 0 {
					list[i] = r
				} else {
					list = append(list, r)
				}
				if strings.EqualFold(r, cur) {
					final[addressKey(cur)] = true
				}
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, addr)
	}
	return dedupe(list), nil
}

func dedupe(list []string) []string {
	seen := make(map[string]bool, len(list))
	out := list[:0]
	for _, a := range list {
		k := addressKey(a)
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, a)
	}
	return out
}
