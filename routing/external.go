package routing

import "strings"

// Addresses travel through routing in external (RFC 5321 wire) form: the
// local part quoted only where it must be, as Postfix's quote_822_local
// does. Directory keys and results are in that form, and so are the
// recipients we hand to the next hop.

// rfc822Specials are the characters that force quoting of a local part.
const rfc822Specials = "()<>@,;:\\\".[] \t"

// QuoteLocal returns local in external form: as it is if it is a valid
// dot-atom, otherwise as a quoted string.
func QuoteLocal(local string) string {
	if !needsQuote(local) {
		return local
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(local); i++ {
		c := local[i]
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String()
}

func needsQuote(local string) bool {
	if local == "" || local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return true
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if c < 0x20 || c == 0x7f || (c != '.' && strings.IndexByte(rfc822Specials, c) >= 0) {
			return true
		}
	}
	return false
}

// unquoteLocal undoes QuoteLocal (and any unnecessary quoting a directory
// value may carry).
func unquoteLocal(local string) string {
	if len(local) < 2 || local[0] != '"' || local[len(local)-1] != '"' {
		return local
	}
	var b strings.Builder
	in := local[1 : len(local)-1]
	for i := 0; i < len(in); i++ {
		if in[i] == '\\' && i+1 < len(in) {
			i++
		}
		b.WriteByte(in[i])
	}
	return b.String()
}

// splitExternal splits an external-form address at the last '@' outside
// a quoted local part. ok is false when there is no such '@'.
func splitExternal(addr string) (local, domain string, ok bool) {
	inQuote := false
	at := -1
	for i := 0; i < len(addr); i++ {
		switch c := addr[i]; {
		case c == '\\' && inQuote:
			i++
		case c == '"':
			inQuote = !inQuote
		case c == '@' && !inQuote:
			at = i
		}
	}
	if at < 0 {
		return addr, "", false
	}
	return addr[:at], addr[at+1:], true
}

// WireForm returns the external form of an address given in internal
// (unquoted) form, as go-smtp hands RCPT and MAIL addresses over.
func WireForm(internal string) string {
	i := strings.LastIndexByte(internal, '@')
	if i < 0 {
		return QuoteLocal(internal)
	}
	return QuoteLocal(internal[:i]) + internal[i:]
}

// canonical re-quotes a directory value minimally ("john"@x → john@x),
// as Postfix's unquote/quote round trip does.
func canonical(addr string) string {
	local, domain, ok := splitExternal(addr)
	if !ok {
		return QuoteLocal(unquoteLocal(addr))
	}
	return QuoteLocal(unquoteLocal(local)) + "@" + domain
}

// splitList splits a result value holding a comma-separated list into its
// addresses (commas inside quotes do not split), trimming spaces.
func splitList(v string) []string {
	var out []string
	inQuote := false
	start := 0
	flush := func(end int) {
		if s := strings.TrimSpace(v[start:end]); s != "" {
			out = append(out, s)
		}
	}
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\\':
			if inQuote {
				i++
			}
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				flush(i)
				start = i + 1
			}
		}
	}
	flush(len(v))
	return out
}

// RecipientKey is the form in which two external-form addresses are the
// same recipient: local part case-folded (unquoted), domain in lower-case
// A-label form. Postfix de-duplicates case-insensitively.
func RecipientKey(addr string) string {
	local, domain, ok := splitExternal(addr)
	if !ok {
		return strings.ToLower(unquoteLocal(addr))
	}
	if d, err := NormalizeDomain(domain); err == nil {
		domain = d
	} else {
		domain = strings.ToLower(domain)
	}
	return strings.ToLower(unquoteLocal(local)) + "@" + domain
}
