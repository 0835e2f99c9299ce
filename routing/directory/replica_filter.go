package directory

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// A replica answers a lookup from memory only when it can evaluate the
// configured search filter itself, exactly as the directory would: AND, OR
// and NOT of equality and presence assertions, where an equality's value
// is a template of literal text and %s, %u, %d (the address, its local part,
// its domain). Values compare case-insensitively, as the caseIgnore rules
// of mail, mailAlternateAddress and objectClass do. Anything else
// (substrings, ordering, extensible matches, %[1-9] of Postfix maps) makes
// compileReplicaFilter fail, and the source stays a live query.

// replicaFilter is a parsed filter template.
type replicaFilter struct {
	op    byte // '&', '|', '!', '=' (equality), '*' (presence)
	attr  string
	value []valuePart // of '='
	kids  []*replicaFilter
}

// valuePart is literal text or one of the expansions 's', 'u', 'd'.
type valuePart struct {
	lit string
	exp byte
}

var errFilterNotLocal = errors.New("filter cannot be evaluated from the replica")

// compileReplicaFilter parses a query_filter template (RFC 4515 syntax with
// %s/%u/%d in values).
func compileReplicaFilter(tmpl string) (*replicaFilter, error) {
	p := &filterParser{s: strings.TrimSpace(tmpl)}
	f, err := p.filter()
	if err != nil {
		return nil, err
	}
	if p.i != len(p.s) {
		return nil, fmt.Errorf("%w: trailing text at %d of %q", errFilterNotLocal, p.i, tmpl)
	}
	if _, ok := f.keyed(); !ok {
		return nil, fmt.Errorf("%w: %q does not select entries by the address (no equality with %%s, %%u or %%d that every match needs)", errFilterNotLocal, tmpl)
	}
	return f, nil
}

type filterParser struct {
	s string
	i int
}

func (p *filterParser) filter() (*replicaFilter, error) {
	if p.i >= len(p.s) || p.s[p.i] != '(' {
		return nil, fmt.Errorf("%w: want ( at %d", errFilterNotLocal, p.i)
	}
	p.i++
	if p.i >= len(p.s) {
		return nil, fmt.Errorf("%w: unterminated filter", errFilterNotLocal)
	}
	var f *replicaFilter
	switch c := p.s[p.i]; c {
	case '&', '|', '!':
		p.i++
		f = &replicaFilter{op: c}
		for p.i < len(p.s) && p.s[p.i] == '(' {
			k, err := p.filter()
			if err != nil {
				return nil, err
			}
			f.kids = append(f.kids, k)
		}
		if len(f.kids) == 0 || (c == '!' && len(f.kids) != 1) {
			return nil, fmt.Errorf("%w: %c with %d operands", errFilterNotLocal, c, len(f.kids))
		}
	default:
		end := strings.IndexByte(p.s[p.i:], ')')
		if end < 0 {
			return nil, fmt.Errorf("%w: unterminated item", errFilterNotLocal)
		}
		item := p.s[p.i : p.i+end]
		p.i += end
		eq := strings.IndexByte(item, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("%w: item %q", errFilterNotLocal, item)
		}
		attr, val := item[:eq], item[eq+1:]
		if strings.ContainsAny(attr, "~<>:") || !validAttrName(attr) {
			return nil, fmt.Errorf("%w: item %q (only equality and presence)", errFilterNotLocal, item)
		}
		if val == "*" {
			f = &replicaFilter{op: '*', attr: strings.ToLower(attr)}
			break
		}
		if strings.Contains(val, "*") {
			return nil, fmt.Errorf("%w: substring item %q", errFilterNotLocal, item)
		}
		parts, err := parseValueTemplate(val)
		if err != nil {
			return nil, fmt.Errorf("%w: item %q: %v", errFilterNotLocal, item, err)
		}
		f = &replicaFilter{op: '=', attr: strings.ToLower(attr), value: parts}
	}
	if p.i >= len(p.s) || p.s[p.i] != ')' {
		return nil, fmt.Errorf("%w: want ) at %d", errFilterNotLocal, p.i)
	}
	p.i++
	return f, nil
}

func validAttrName(a string) bool {
	for i := 0; i < len(a); i++ {
		c := a[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == ';') {
			return false
		}
	}
	return a != ""
}

// parseValueTemplate splits an assertion value into literal text (RFC 4515
// \XX escapes decoded) and expansions.
func parseValueTemplate(v string) ([]valuePart, error) {
	var parts []valuePart
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			parts = append(parts, valuePart{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '%':
			if i+1 == len(v) {
				return nil, errors.New("% at the end")
			}
			i++
			switch e := v[i]; e {
			case 's', 'u', 'd':
				flush()
				parts = append(parts, valuePart{exp: e})
			case '%':
				lit.WriteByte('%')
			default:
				return nil, fmt.Errorf("expansion %%%c", e)
			}
		case '\\':
			if i+2 >= len(v) {
				return nil, errors.New("short \\ escape")
			}
			b, err := strconv.ParseUint(v[i+1:i+3], 16, 8)
			if err != nil {
				return nil, fmt.Errorf("escape \\%s", v[i+1:i+3])
			}
			lit.WriteByte(byte(b))
			i += 2
		default:
			lit.WriteByte(c)
		}
	}
	flush()
	return parts, nil
}

// keyed tells whether every entry matching f must match one of its
// address-dependent equalities, and lists them: those are the index
// lookups that find every candidate.
func (f *replicaFilter) keyed() ([]*replicaFilter, bool) {
	switch f.op {
	case '=':
		for _, p := range f.value {
			if p.exp != 0 {
				return []*replicaFilter{f}, true
			}
		}
		return nil, false
	case '|':
		var all []*replicaFilter
		for _, k := range f.kids {
			ks, ok := k.keyed()
			if !ok {
				return nil, false
			}
			all = append(all, ks...)
		}
		return all, true
	case '&':
		for _, k := range f.kids {
			if ks, ok := k.keyed(); ok {
				return ks, true
			}
		}
	}
	return nil, false
}

// expand is the value of an equality for an address.
func (f *replicaFilter) expand(addr string) string {
	local, domain := addr, ""
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		local, domain = addr[:i], addr[i+1:]
	}
	var b strings.Builder
	for _, p := range f.value {
		switch p.exp {
		case 's':
			b.WriteString(addr)
		case 'u':
			b.WriteString(local)
		case 'd':
			b.WriteString(domain)
		default:
			b.WriteString(p.lit)
		}
	}
	return b.String()
}

// match evaluates f against an entry's attributes.
func (f *replicaFilter) match(addr string, attr func(name string) []string) bool {
	switch f.op {
	case '&':
		for _, k := range f.kids {
			if !k.match(addr, attr) {
				return false
			}
		}
		return true
	case '|':
		for _, k := range f.kids {
			if k.match(addr, attr) {
				return true
			}
		}
		return false
	case '!':
		return !f.kids[0].match(addr, attr)
	case '*':
		return len(attr(f.attr)) > 0
	default:
		want := f.expand(addr)
		for _, v := range attr(f.attr) {
			if strings.EqualFold(v, want) {
				return true
			}
		}
		return false
	}
}

// attrs lists every attribute f reads (lower-cased, each once).
func (f *replicaFilter) attrs(into []string) []string {
	if f.attr != "" && !containsFold(into, f.attr) {
		into = append(into, f.attr)
	}
	for _, k := range f.kids {
		into = k.attrs(into)
	}
	return into
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}
