package tlsrpt

import (
	"errors"
	"reflect"
	"testing"
)

func TestParseTXT(t *testing.T) {
	mailto := func(addr, raw string) URI { return URI{Scheme: "mailto", Address: addr, URL: raw} }
	https := func(raw string) URI { return URI{Scheme: "https", URL: raw} }
	tests := []struct {
		name    string
		records []string
		want    []URI
		err     error
	}{
		{"mailto", []string{"v=TLSRPTv1; rua=mailto:reports@example.com"},
			[]URI{mailto("reports@example.com", "mailto:reports@example.com")}, nil},
		{"mailto and https", []string{"v=TLSRPTv1;rua=mailto:a@b.example , https://r.example/tlsrpt"},
			[]URI{mailto("a@b.example", "mailto:a@b.example"), https("https://r.example/tlsrpt")}, nil},
		{"trailing delimiter", []string{"v=TLSRPTv1; rua=https://r.example/x; "},
			[]URI{https("https://r.example/x")}, nil},
		{"space before first delimiter", []string{"v=TLSRPTv1 ;rua=https://r.example/x"},
			[]URI{https("https://r.example/x")}, nil},
		{"extension field", []string{"v=TLSRPTv1; rua=mailto:a@b.example; ext_1.x=foo:bar"},
			[]URI{mailto("a@b.example", "mailto:a@b.example")}, nil},
		{"percent-encoded mailto", []string{"v=TLSRPTv1; rua=mailto:tls%2Breports@example.com"},
			[]URI{mailto("tls+reports@example.com", "mailto:tls%2Breports@example.com")}, nil},
		{"mailto hfields dropped", []string{"v=TLSRPTv1; rua=mailto:a@b.example?subject=hi"},
			[]URI{mailto("a@b.example", "mailto:a@b.example?subject=hi")}, nil},
		{"unsupported scheme ignored", []string{"v=TLSRPTv1; rua=ftp://f.example/x,MAILTO:a@b.example"},
			[]URI{mailto("a@b.example", "MAILTO:a@b.example")}, nil},
		{"other TXT records ignored", []string{"v=spf1 -all", "v=TLSRPTv1; rua=https://r.example/x", "hello"},
			[]URI{https("https://r.example/x")}, nil},

		{"only unsupported schemes", []string{"v=TLSRPTv1; rua=http://r.example/x,ftp://f.example/"}, nil, ErrNoSupportedRUA},
		{"no records", nil, nil, ErrNoRecord},
		{"no tlsrpt record", []string{"v=spf1 -all"}, nil, ErrNoRecord},
		{"version suffix", []string{"v=TLSRPTv10; rua=mailto:a@b.example"}, nil, ErrNoRecord},
		{"version case", []string{"v=tlsrptv1; rua=mailto:a@b.example"}, nil, ErrNoRecord},
		{"leading space", []string{" v=TLSRPTv1; rua=mailto:a@b.example"}, nil, ErrNoRecord},
		{"version only", []string{"v=TLSRPTv1"}, nil, ErrNoRecord},
		{"two records", []string{"v=TLSRPTv1; rua=mailto:a@b.example", "v=TLSRPTv1; rua=mailto:c@d.example"}, nil, ErrMultipleRecords},
		{"two records one broken", []string{"v=TLSRPTv1; rua=mailto:a@b.example", "v=TLSRPTv1;"}, nil, ErrMultipleRecords},
		{"no fields", []string{"v=TLSRPTv1;"}, nil, ErrSyntax},
		{"empty field", []string{"v=TLSRPTv1;;rua=mailto:a@b.example"}, nil, ErrSyntax},
		{"no rua", []string{"v=TLSRPTv1; foo=bar"}, nil, ErrSyntax},
		{"duplicate rua", []string{"v=TLSRPTv1; rua=mailto:a@b.example; rua=mailto:c@d.example"}, nil, ErrSyntax},
		{"empty rua", []string{"v=TLSRPTv1; rua="}, nil, ErrSyntax},
		{"empty URI in list", []string{"v=TLSRPTv1; rua=mailto:a@b.example,,https://r.example/"}, nil, ErrSyntax},
		{"not a URI", []string{"v=TLSRPTv1; rua=reports@example.com"}, nil, ErrSyntax},
		{"bad mailto", []string{"v=TLSRPTv1; rua=mailto:not-an-address"}, nil, ErrSyntax},
		{"mailto with name", []string{"v=TLSRPTv1; rua=mailto:Bob%20%3Cb@example.com%3E"}, nil, ErrSyntax},
		{"https without host", []string{"v=TLSRPTv1; rua=https:///x"}, nil, ErrSyntax},
		{"field without =", []string{"v=TLSRPTv1; rua=mailto:a@b.example; junk"}, nil, ErrSyntax},
		{"bad extension value", []string{"v=TLSRPTv1; rua=mailto:a@b.example; x=a b"}, nil, ErrSyntax},
		{"bad extension name", []string{"v=TLSRPTv1; rua=mailto:a@b.example; _x=a"}, nil, ErrSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, err := ParseTXT(tt.records)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				if rec != nil {
					t.Fatalf("record %+v returned with error", rec)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(rec.RUA, tt.want) {
				t.Errorf("RUA = %+v\nwant %+v", rec.RUA, tt.want)
			}
		})
	}
}

func TestTXTName(t *testing.T) {
	for in, want := range map[string]string{
		"example.com":  "_smtp._tls.example.com",
		"example.com.": "_smtp._tls.example.com",
	} {
		if got := TXTName(in); got != want {
			t.Errorf("TXTName(%q) = %q, want %q", in, got, want)
		}
	}
}
