package routing

import (
	"context"
	"errors"
	"reflect"
	"testing"
)

// The rules of ../shared notes "How Postfix 3.7 expands virtual aliases",
// each as a case: lookup order with a delimiter, extension propagation,
// catch-all, @domain results, comma lists, spelling, quoting.
func TestExpandPostfixRules(t *testing.T) {
	dir := map[string][]string{
		"user@d.test":           {"target@t.test"},
		"user+literal@d.test":   {"lit@t.test"},
		"multi@d.test":          {"m1@t.test", "m2+x@t.test"},
		"list@d.test":           {"l1@t.test, l2@t.test ,l3@t.test"},
		"quotedlist@d.test":     {`"a,b"@t.test, c@t.test`},
		"@catch.test":           {"catcher@t.test"},
		"@old.test":             {"@new.test"},
		"special@old.test":      {"someone@t.test"},
		"chain1@d.test":         {"chain2@d.test"},
		"chain2@d.test":         {"Chain3@T.test"},
		"noresult@d.test":       nil,
		"\"john smith\"@d.test": {"js@t.test"},
		"quoted@d.test":         {`"plain"@t.test`},
		"needs@d.test":          {`"x y"@t.test`},
		"+lead@d.test":          {"leadplus@t.test"},
		"self@d.test":           {"self@d.test", "copy@t.test"},
	}
	tests := []struct {
		name     string
		catchAll bool
		noKeep   bool
		addr     string
		want     []string
		err      error
	}{
		{"exact", false, false, "user@d.test", []string{"target@t.test"}, nil},
		{"extension stripped and propagated", false, false, "user+foo@d.test", []string{"target+foo@t.test"}, nil},
		{"extension kept in client spelling", false, false, "user+FoO@d.test", []string{"target+FoO@t.test"}, nil},
		{"literal extension entry wins", false, false, "user+literal@d.test", []string{"lit@t.test"}, nil},
		{"extension split at first delimiter", false, false, "user+a+b@d.test", []string{"target+a+b@t.test"}, nil},
		{"extension appended to results with extensions", false, false, "multi+e@d.test", []string{"m1+e@t.test", "m2+x+e@t.test"}, nil},
		{"no propagation when off", false, true, "user+foo@d.test", []string{"target@t.test"}, nil},
		{"leading delimiter is not an extension", false, false, "+lead@d.test", []string{"leadplus@t.test"}, nil},
		{"empty base never looked up", false, false, "+x@d.test", nil, ErrNotFound},
		{"comma list split, spaces dropped", false, false, "list@d.test", []string{"l1@t.test", "l2@t.test", "l3@t.test"}, nil},
		{"comma inside quotes does not split", false, false, "quotedlist@d.test", []string{`"a,b"@t.test`, "c@t.test"}, nil},
		{"catch-all off by default", false, false, "anyone@catch.test", nil, ErrNotFound},
		{"catch-all", true, false, "anyone@catch.test", []string{"catcher@t.test"}, nil},
		{"catch-all propagates no extension", true, false, "anyone+x@catch.test", []string{"catcher@t.test"}, nil},
		{"@domain result keeps client local part", true, false, "Some.One@old.test", []string{"Some.One@new.test"}, nil},
		{"@domain result keeps extension", true, false, "some+ext@old.test", []string{"some+ext@new.test"}, nil},
		{"specific entry beats @domain", true, false, "special@old.test", []string{"someone@t.test"}, nil},
		{"stored spelling of results", false, false, "chain1@d.test", []string{"Chain3@T.test"}, nil},
		{"entry without results is not found", false, false, "noresult@d.test", nil, ErrNotFound},
		{"quoted local part matches quoted key", false, false, `"john smith"@d.test`, []string{"js@t.test"}, nil},
		{"unnecessary quotes removed from results", false, false, "quoted@d.test", []string{"plain@t.test"}, nil},
		{"necessary quotes kept", false, false, "needs@d.test", []string{`"x y"@t.test`}, nil},
		{"self-map keeps its copy", false, false, "self@d.test", []string{"self@d.test", "copy@t.test"}, nil},
		{"self-map with extension", false, false, "self+x@d.test", []string{"self+x@d.test", "copy+x@t.test"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &Expander{Source: newFake(dir), Delimiter: "+", CatchAll: tt.catchAll, KeepExtension: !tt.noKeep, Limits: PostfixLimits}
			got, err := e.Expand(context.Background(), tt.addr)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Expand(%s) = %v, %v; want error %v", tt.addr, got, err, tt.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Expand(%s) = %q, %v; want %q", tt.addr, got, err, tt.want)
			}
		})
	}
}

// Static domain rewrites work without any directory entry, after the
// directory (a specific entry wins).
func TestExpandDomainRewrites(t *testing.T) {
	src := newFake(map[string][]string{"kept@old.test": {"special@t.test"}})
	e := &Expander{Source: src, Delimiter: "+", KeepExtension: true, Rewrites: DomainRewrites{"old.test": "new.test"}, Limits: PostfixLimits}
	for addr, want := range map[string]string{
		"a.b@old.test":   "a.b@new.test",
		"A.B+x@OLD.test": "A.B+x@new.test",
		"kept@old.test":  "special@t.test",
	} {
		got, err := e.Expand(context.Background(), addr)
		if err != nil || len(got) != 1 || got[0] != want {
			t.Errorf("Expand(%s) = %q, %v; want %s", addr, got, err, want)
		}
	}
}

func TestExpandTrace(t *testing.T) {
	e := &Expander{Source: newFake(map[string][]string{"a@d.test": {"b@d.test", "c@t.test"}, "b@d.test": {"b@d.test"}}), Limits: PostfixLimits}
	x, err := e.Trace(context.Background(), "a@d.test")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range x.Steps {
		got = append(got, s.Address+"→"+s.Key)
	}
	want := []string{"a@d.test→a@d.test", "b@d.test→b@d.test", "c@t.test→"}
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(x.Recipients, []string{"b@d.test", "c@t.test"}) {
		t.Fatalf("steps %q recipients %q", got, x.Recipients)
	}
	if !x.Steps[1].Final || x.Steps[0].Final || x.Steps[1].Depth != 1 || x.Steps[2].Depth != 1 {
		t.Fatalf("finality/depth wrong: %+v", x.Steps)
	}
}

func TestQuoteLocal(t *testing.T) {
	for in, want := range map[string]string{
		"plain": "plain", "a.b": "a.b", "john smith": `"john smith"`, ".lead": `".lead"`,
		"a..b": `"a..b"`, `q"uote`: `"q\"uote"`, `back\slash`: `"back\\slash"`, "x(y)": `"x(y)"`,
		"a@b": `"a@b"`, "tag+ext": "tag+ext", "ünï": "ünï", "": `""`,
	} {
		if got := QuoteLocal(in); got != want {
			t.Errorf("QuoteLocal(%q) = %s, want %s", in, got, want)
		}
		if got := unquoteLocal(QuoteLocal(in)); got != in {
			t.Errorf("unquote(quote(%q)) = %q", in, got)
		}
	}
}
