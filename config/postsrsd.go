package config

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Postsrsd is what mailfwd takes from a postsrsd 2.x postsrsd.conf
// (libconfuse syntax: `key = value`, strings in double quotes, lists in
// braces, # and // comments), so that a site replacing postsrsd keeps its
// SRS domain, secrets and hash settings, and so keeps reversing the bounces
// in flight. Keys mailfwd has no use for are read and ignored.
type Postsrsd struct {
	SRSDomain        string   // srs-domain (a leading dot stripped, as postsrsd does)
	Domains          []string // domains (local domains: never rewritten)
	SecretsFile      string   // secrets-file
	Separator        string   // separator
	HashLength       int      // hash-length
	HashMinimum      int      // hash-minimum
	OriginalEnvelope string   // original-envelope: embedded or database
	EnvelopeDatabase string   // envelope-database: sqlite:PATH or redis:HOST:PORT
}

// LoadPostsrsd reads a postsrsd.conf.
func LoadPostsrsd(path string) (*Postsrsd, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := ParsePostsrsd(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// ParsePostsrsd parses postsrsd.conf text.
func ParsePostsrsd(b []byte) (*Postsrsd, error) {
	toks, err := confuseTokens(b)
	if err != nil {
		return nil, err
	}
	p := &Postsrsd{}
	for i := 0; i < len(toks); {
		key := toks[i]
		if key.quoted || i+2 >= len(toks) || toks[i+1].text != "=" || toks[i+1].quoted {
			return nil, fmt.Errorf("line %d: want key = value", key.line)
		}
		i += 2
		var vals []token
		if v := toks[i]; !v.quoted && v.text == "{" {
			for i++; ; i++ {
				if i >= len(toks) {
					return nil, fmt.Errorf("line %d: list not closed", key.line)
				}
				t := toks[i]
				if !t.quoted && t.text == "}" {
					i++
					break
				}
				if !t.quoted && t.text == "," {
					continue
				}
				vals = append(vals, t)
			}
		} else {
			vals = []token{v}
			i++
		}
		one := func() (string, error) {
			if len(vals) != 1 {
				return "", fmt.Errorf("line %d: %s takes one value", key.line, key.text)
			}
			return vals[0].text, nil
		}
		num := func() (int, error) {
			s, err := one()
			if err != nil {
				return 0, err
			}
			n, err := strconv.Atoi(s)
			if err != nil {
				return 0, fmt.Errorf("line %d: %s: %q is not a number", key.line, key.text, s)
			}
			return n, nil
		}
		switch key.text {
		case "srs-domain":
			p.SRSDomain, err = one()
			p.SRSDomain = strings.TrimPrefix(p.SRSDomain, ".")
		case "domains":
			for _, v := range vals {
				p.Domains = append(p.Domains, v.text)
			}
		case "secrets-file":
			p.SecretsFile, err = one()
		case "separator":
			p.Separator, err = one()
		case "hash-length":
			p.HashLength, err = num()
		case "hash-minimum":
			p.HashMinimum, err = num()
		case "original-envelope":
			p.OriginalEnvelope, err = one()
		case "envelope-database":
			p.EnvelopeDatabase, err = one()
		}
		if err != nil {
			return nil, err
		}
	}
	switch p.OriginalEnvelope {
	case "", "embedded", "database":
	default:
		return nil, fmt.Errorf("original-envelope %q: want embedded or database", p.OriginalEnvelope)
	}
	return p, nil
}

type token struct {
	text   string
	quoted bool
	line   int
}

// confuseTokens splits libconfuse text into words, quoted strings and the
// punctuation = { } , (comments dropped).
func confuseTokens(b []byte) ([]token, error) {
	var out []token
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		for i := 0; i < len(l); {
			c := l[i]
			switch {
			case c == ' ' || c == '\t' || c == '\r':
				i++
			case c == '#' || (c == '/' && strings.HasPrefix(l[i:], "//")):
				i = len(l)
			case c == '=' || c == '{' || c == '}' || c == ',':
				out = append(out, token{text: string(c), line: n})
				i++
			case c == '"':
				var s strings.Builder
				j := i + 1
				for ; j < len(l) && l[j] != '"'; j++ {
					if l[j] == '\\' && j+1 < len(l) {
						j++
					}
					s.WriteByte(l[j])
				}
				if j >= len(l) {
					return nil, fmt.Errorf("line %d: string not closed", n)
				}
				out = append(out, token{text: s.String(), quoted: true, line: n})
				i = j + 1
			default:
				j := i
				for j < len(l) && !strings.ContainsRune(" \t\r#={},\"", rune(l[j])) {
					j++
				}
				out = append(out, token{text: l[i:j], line: n})
				i = j
			}
		}
	}
	return out, sc.Err()
}
