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

// PostfixLimits are Postfix's own defaults of the three, for answering as
// Postfix would (mailfwd lookup -postfix-map). The relay's are
// configuration (routing.*_limit), passed in by the wiring; an Expander
// has no defaults of its own.
var PostfixLimits = Limits{Recursion: 1000, Expansion: 1000, AddressLength: 1000}

// errNoLimits refuses an Expander built without limits.
var errNoLimits = errors.New("routing: Expander.Limits must all be positive")

// Expander rewrites one envelope recipient into its final recipients, as
// Postfix's cleanup does with virtual_alias_maps.
type Expander struct {
	Source Source
	Limits Limits
	// Delimiter is recipient_delimiter: any of these characters starts an
	// address extension ("+" for user+ext@domain). Empty: no extensions.
	Delimiter string
	// CatchAll enables "@domain" lookups after the address itself (and
	// its extension-less form) found nothing. Off by default: a catch-all
	// accepts mail for every address, which invites dictionary attacks.
	CatchAll bool
	// KeepExtension is propagate_unmatched_extensions: an extension
	// removed to find a match is appended to every result.
	KeepExtension bool
	// Rewrites are static whole-domain rewrites, tried last (after any
	// catch-all), whether or not catch-all lookups are on.
	Rewrites DomainRewrites
}

// Step is one lookup of an expansion, for `mailfwd lookup -v`.
type Step struct {
	Depth   int      // how many rewrites led to Address
	Address string   // the address being expanded
	Key     string   // the key that matched ("" when none did)
	Matches []Match  // what the source returned for Key
	Results []string // the addresses Address became
	Final   bool     // Address maps to itself, or to nothing: delivered
}

// Expansion is the outcome of Expand with its steps.
type Expansion struct {
	Recipients []string
	Steps      []Step
}

// Expand returns the final recipients of addr (external form), de-duplicated
// case-insensitively with the first in expansion order kept, each spelled
// as the place it came from spells it.
//
// addr itself must be in the directory, or ErrNotFound is returned: relay
// domains are ours, and an address we do not know is refused, not passed on.
func (e *Expander) Expand(ctx context.Context, addr string) ([]string, error) {
	x, err := e.expand(ctx, addr, false)
	if err != nil {
		return nil, err
	}
	return x.Recipients, nil
}

// Trace is Expand that also records every step.
func (e *Expander) Trace(ctx context.Context, addr string) (*Expansion, error) {
	return e.expand(ctx, addr, true)
}

// expand follows Postfix cleanup_map1n: the first result of a lookup
// replaces the address in place and is looked up again, the others are
// appended and expanded in their turn; an address whose results include
// itself is final (and keeps that copy).
func (e *Expander) expand(ctx context.Context, addr string, trace bool) (*Expansion, error) {
	lim := e.Limits
	if lim.Recursion <= 0 || lim.Expansion <= 0 || lim.AddressLength <= 0 {
		return nil, errNoLimits
	}
	x := &Expansion{}
	// Unnecessary quoting goes ("john"@x is john@x), as in Postfix, whose
	// cleanup works on the unquoted form.
	addr = canonical(addr)
	list := []string{addr}
	depths := []int{0}
	final := map[string]bool{} // addresses that expanded into themselves
	found := false
	for i := 0; i < len(list); i++ {
		if len(list) > lim.Expansion {
			return x, fmt.Errorf("%w: %s expands to more than %d addresses", ErrExpansionLimit, addr, lim.Expansion)
		}
		for count := 0; ; count++ {
			cur := list[i]
			if final[RecipientKey(cur)] {
				break
			}
			if count >= lim.Recursion {
				return x, fmt.Errorf("%w: %s nests deeper than %d (alias loop?)", ErrExpansionLimit, addr, lim.Recursion)
			}
			key, matches, results, staleMiss, err := e.mapOne(ctx, cur)
			if err != nil {
				return x, fmt.Errorf("looking up %s: %w", cur, err)
			}
			if staleMiss && i == 0 && count == 0 && len(results) == 0 {
				// The RCPT address itself, unknown to a replica we cannot
				// check against the directory: temporary, not unknown.
				return x, fmt.Errorf("looking up %s: %w", cur, ErrReplicaMiss)
			}
			step := Step{Depth: depths[i], Address: cur, Key: key, Matches: matches, Results: results, Final: len(results) == 0}
			if len(results) == 0 {
				if trace {
					x.Steps = append(x.Steps, step)
				}
				break
			}
			found = true
			for j, r := range results {
				if len(r) > lim.AddressLength {
					return x, fmt.Errorf("%w: result for %s longer than %d octets", ErrExpansionLimit, cur, lim.AddressLength)
				}
				if j == 0 {
					list[i] = r
					depths[i]++
				} else {
					list = append(list, r)
					depths = append(depths, depths[i])
				}
				if strings.EqualFold(r, cur) {
					final[RecipientKey(cur)] = true
					step.Final = true
				}
			}
			if trace {
				x.Steps = append(x.Steps, step)
			}
		}
	}
	if !found {
		return x, fmt.Errorf("%w: %s", ErrNotFound, addr)
	}
	x.Recipients = dedupe(list)
	return x, nil
}

// mapOne is Postfix's mail_addr_map for one address: look up the address,
// then (with a delimiter) the address without its extension, then (with a
// catch-all) "@domain"; split the first non-empty answer into addresses,
// complete "@domain" results with our local part and propagate a removed
// extension.
//
// staleMiss: some key was not in the directory replica while the
// directory was unreachable (ErrReplicaMiss), counted as not found.
func (e *Expander) mapOne(ctx context.Context, addr string) (key string, matches []Match, results []string, staleMiss bool, err error) {
	local, domain, qualified := splitExternal(addr)
	ext := ""
	try := func(k string) (bool, error) {
		ms, err := e.Source.Lookup(ctx, k)
		if errors.Is(err, ErrReplicaMiss) {
			staleMiss = true
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if len(ms) == 0 {
			return false, nil
		}
		key, matches = k, ms
		return true, nil
	}
	ok, err := try(addr)
	if !ok && err == nil && e.Delimiter != "" && qualified {
		ulocal := unquoteLocal(local)
		if i := strings.IndexAny(ulocal, e.Delimiter); i > 0 {
			ext = ulocal[i:]
			ok, err = try(QuoteLocal(ulocal[:i]) + "@" + domain)
			if !ok {
				ext = ""
			}
		}
	}
	if !ok && err == nil && e.CatchAll && qualified {
		// A catch-all match removes no extension, so none is propagated.
		ok, err = try("@" + domain)
	}
	if !ok && err == nil && len(e.Rewrites) > 0 && qualified {
		if ms, _ := e.Rewrites.Lookup(ctx, "@"+domain); len(ms) > 0 {
			key, matches, ok = "@"+domain, ms, true
		}
	}
	if err != nil || !ok {
		return "", nil, nil, staleMiss, err
	}
	for _, m := range matches {
		for _, v := range splitList(m.Value) {
			if strings.HasPrefix(v, "@") {
				// Our local part (without a removed extension, which is
				// propagated below) at the stored domain.
				ulocal := unquoteLocal(local)
				v = QuoteLocal(strings.TrimSuffix(ulocal, ext)) + v
			}
			v = canonical(v)
			if ext != "" && e.KeepExtension {
				v = withExtension(v, ext)
			}
			results = append(results, v)
		}
	}
	return key, matches, results, staleMiss, nil
}

// withExtension inserts ext (delimiter included) at the end of addr's
// local part.
func withExtension(addr, ext string) string {
	local, domain, ok := splitExternal(addr)
	if !ok {
		return QuoteLocal(unquoteLocal(addr) + ext)
	}
	return QuoteLocal(unquoteLocal(local)+ext) + "@" + domain
}

func dedupe(list []string) []string {
	seen := make(map[string]bool, len(list))
	out := make([]string, 0, len(list))
	for _, a := range list {
		k := RecipientKey(a)
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, a)
	}
	return out
}
