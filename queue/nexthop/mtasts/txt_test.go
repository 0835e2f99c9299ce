package mtasts

import (
	"errors"
	"strings"
	"testing"
)

func TestParseTXT(t *testing.T) {
	tests := []struct {
		name    string
		records []string
		id      string
		err     error // nil, ErrNoRecord or ErrInvalidTXT
	}{
		{"rfc example", []string{"v=STSv1; id=20160831085700Z;"}, "20160831085700Z", nil},
		{"no trailing delimiter", []string{"v=STSv1; id=abc"}, "abc", nil},
		{"no blanks", []string{"v=STSv1;id=abc;"}, "abc", nil},
		{"blank before delimiter", []string{"v=STSv1 ;\tid=abc ; "}, "abc", nil},
		{"extension", []string{"v=STSv1; ext_1=val.ue!; id=abc;"}, "abc", nil},
		{"other records discarded", []string{"v=spf1 -all", "google-site-verification=x", "v=STSv1; id=abc"}, "abc", nil},
		{"id of 32", []string{"v=STSv1; id=" + strings.Repeat("a1", 16)}, strings.Repeat("a1", 16), nil},

		{"no records", nil, "", ErrNoRecord},
		{"only others", []string{"v=spf1 -all", "hello"}, "", ErrNoRecord},
		{"other version", []string{"v=STSv2; id=abc"}, "", ErrNoRecord},
		{"STSv10 is not STSv1", []string{"v=STSv10; id=abc"}, "", ErrNoRecord},
		{"not at the start", []string{" v=STSv1; id=abc"}, "", ErrNoRecord},
		{"lower case", []string{"v=stsv1; id=abc"}, "", ErrNoRecord},

		{"two records", []string{"v=STSv1; id=abc", "v=STSv1; id=abc"}, "", ErrInvalidTXT},
		{"two records, one invalid", []string{"v=STSv1; id=abc", "v=STSv1"}, "", ErrInvalidTXT},
		{"no id", []string{"v=STSv1;"}, "", ErrInvalidTXT},
		{"bare version", []string{"v=STSv1"}, "", ErrInvalidTXT},
		{"empty id", []string{"v=STSv1; id=;"}, "", ErrInvalidTXT},
		{"id too long", []string{"v=STSv1; id=" + strings.Repeat("a", 33)}, "", ErrInvalidTXT},
		{"id with punctuation", []string{"v=STSv1; id=2016-08-31;"}, "", ErrInvalidTXT},
		{"id with blank inside", []string{"v=STSv1; id=ab c;"}, "", ErrInvalidTXT},
		{"id repeated", []string{"v=STSv1; id=abc; id=abc"}, "", ErrInvalidTXT},
		{"ID is not id", []string{"v=STSv1; ID=abc"}, "", ErrInvalidTXT},
		{"field without =", []string{"v=STSv1; id=abc; junk"}, "", ErrInvalidTXT},
		{"bad extension value", []string{"v=STSv1; id=abc; x=a=b"}, "", ErrInvalidTXT},
		{"junk after version", []string{"v=STSv1 x; id=abc"}, "", ErrNoRecord},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := ParseTXT(tt.records)
			if tt.err == nil {
				if err != nil || id != tt.id {
					t.Fatalf("ParseTXT = %q, %v; want %q", id, err, tt.id)
				}
				return
			}
			if !errors.Is(err, tt.err) || id != "" {
				t.Fatalf("ParseTXT = %q, %v; want error %v", id, err, tt.err)
			}
		})
	}
}
