//go:build e2e

package e2e

// Differential test: real Postfix is the oracle for alias expansion.
//
// For each directory server (389-DS and OpenLDAP slapd, both loaded by
// TestMain with deploy/seed.ldif + testdata/differential.ldif), a second
// Postfix instance runs with virtual_alias_maps = ldap:<copy of
// testdata/differential.cf pointing at that server>, recipient_delimiter = +
// and the default propagate_unmatched_extensions, relaying everything to the
// shared smtp-sink. Every address in differentialCases is sent to it as its
// own message; what the sink receives (or Postfix's "451 4.6.0 Alias
// expansion error") is compared with `mailfwd lookup -postfix-map CF -json`.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/emersion/go-smtp"
)

// differentialCases are the addresses sent, spelled as in RCPT TO:<...>.
// Entries they hit are in testdata/differential.ldif.
var differentialCases = []struct{ addr, why string }{
	// fan-out, lists, chains
	{"fan@diff.example", "three mailForwardingAddress values"},
	{"FAN@DIFF.EXAMPLE", "fan-out, upper-case spelling"},
	{"list@diff.example", "one value with a comma-separated list"},
	{"listmix@diff.example", "list value + plain values, case-insensitive duplicate"},
	{"chain-a@chain.example", "chain a -> b -> c -> end"},
	{"chain-b@chain.example", "middle of a chain"},
	{"hop00@chain.example", "21-hop chain"},
	{"hop10@chain.example", "middle of the long chain"},
	{"tree@chain.example", "fan-out at every hop, a shared branch"},
	{"diamond@diff.example", "two branches reach one address spelled differently"},
	// self-maps
	{"self@diff.example", "self-map among several results"},
	{"SELF@diff.example", "self-map, client spelled it in upper case"},
	{"selfcase@diff.example", "self-map stored in another case"},
	// loops
	{"loop2-a@loop.example", "two-entry loop"},
	{"loop2-b@loop.example", "two-entry loop, other member"},
	{"loop3-a@loop.example", "three-entry loop"},
	{"loop3-c@loop.example", "three-entry loop, last member"},
	{"loopfan@loop.example", "fan-out with one looping branch"},
	{"loopself-a@loop.example", "loop whose other member maps to itself too"},
	{"loopself-b@loop.example", "self-map + loop back"},
	// not found / several entries
	{"nofwd@diff.example", "entry without mailForwardingAddress"},
	{"partial@diff.example", "two entries, only one has a forwarding address"},
	{"dup@diff.example", "two entries match the same address"},
	{"nobody@diff.example", "unknown address"},
	{"Nobody@Unknown.Example", "unknown domain, mixed case passes through as sent"},
	{"someone@dest.example", "domain without entries"},
	// case
	{"mixedcase@diff.example", "stored mixed case, sent lower case"},
	{"MIXEDCASE@DIFF.EXAMPLE", "stored mixed case, sent upper case"},
	{"mixed.alt@diff.example", "mixed-case mailAlternateAddress"},
	// plus addresses
	{"user+tag@diff.example", "plus-address stored literally"},
	{"User+Tag@Diff.Example", "literal plus-address, other case"},
	{"user+other@diff.example", "extension stripped, propagated"},
	{"USER+Other@diff.example", "stripped, extension keeps the client's case"},
	{"user+a+b@diff.example", "split at the first +"},
	{"user@diff.example", "the plain entry"},
	{"+tag@diff.example", "nothing before the + : not stripped"},
	{"plusres@diff.example", "result already has an extension"},
	{"plusres+y@diff.example", "extension appended to a result with an extension"},
	{"fan+x@diff.example", "extension propagated to every fan-out result"},
	{"list+q@diff.example", "extension propagated into a comma list"},
	{"chain-a+e@chain.example", "extension at every hop of a chain"},
	{"pchain-a+z@chain.example", "extension, chain with a side branch"},
	{"hop00+deep@chain.example", "extension through 21 hops"},
	{"self+x@diff.example", "self-map reached through extension stripping"},
	{"nobody+x@diff.example", "unknown with an extension"},
	{"loop2-a+x@loop.example", "loop reached through stripping"},
	// catch-all
	{"random@catch.example", "catch-all"},
	{"random+ext@catch.example", "catch-all propagates no extension"},
	{"known@catch.example", "specific entry wins over the catch-all"},
	{"Known+x@CATCH.example", "specific entry via stripping, before the catch-all"},
	{"nofwd@catch.example", "entry without forwarding address: catch-all still applies"},
	// @domain rewrite
	{"alice@old.example", "@old.example -> @new.example"},
	{"Alice@Old.Example", "@domain rewrite keeps the client's local part"},
	{"alice+ext@old.example", "@domain rewrite with an extension"},
	{"special@old.example", "own entry in the rewritten domain"},
	{"bob@old.example", "rewrite result found again"},
	{"bob+e@old.example", "rewrite + extension + second lookup"},
	// LDAP filter specials in local parts
	{"x*@diff.example", "* stored literally"},
	{"*@diff.example", "* alone: (mail=*@...) would be a substring filter"},
	{"x*y@diff.example", "unknown with *"},
	{"xy@diff.example", "what an unescaped x* would also match"},
	{`"a(b)"@diff.example`, "parentheses (must be quoted in SMTP)"},
	{`"a(b)c"@diff.example`, "unknown with parentheses"},
	{`"back\\slash"@diff.example`, "backslash (quoted-pair in SMTP)"},
	{`"x\\*"@diff.example`, "backslash and star"},
	{`"a)(mail=*"@diff.example`, "filter injection attempt"},
	// quoted local parts
	{`"john smith"@diff.example`, "quoted local part with a space"},
	{`"John Smith"@Diff.Example`, "quoted, other case"},
	{`"john"@diff.example`, "needlessly quoted: looked up as john@"},
	{`"john smith+x"@diff.example`, "quoted with an extension"},
	{"toquoted@diff.example", "result with a quoted local part"},
	// seed entries are reachable too (read-only use)
	{"sales@company.com", "seed alias (company.com)"},
}

// postfixResult is what the oracle Postfix did with one message.
type postfixResult struct {
	queueID    string
	reply      string   // final reply to DATA (or the failing command's)
	rejected   bool     // a command failed with something other than the alias error
	aliasError bool     // 4.6.0 Alias expansion error (DATA reply or maillog)
	rcpts      []string // envelope recipients at the sink, sorted
	logStatus  []string // maillog to=<...> status=... lines other than sent
	removed    bool     // qmgr logged "removed": every recipient is finished
}

func (r postfixResult) String() string {
	switch {
	case r.aliasError:
		return "ALIAS-ERROR (" + r.reply + ")"
	case r.rejected:
		return "REJECTED " + r.reply
	case len(r.logStatus) > 0:
		return fmt.Sprintf("%v + %v", r.rcpts, r.logStatus)
	case !r.removed:
		return fmt.Sprintf("INCOMPLETE %v", r.rcpts)
	}
	return fmt.Sprint(r.rcpts)
}

// lookupResult is mailfwd lookup -json's answer.
type lookupResult struct {
	Address    string   `json:"address"`
	Status     string   `json:"status"`
	Recipients []string `json:"recipients"`
	Error      string   `json:"error"`
	exit       int
	stderr     string
	missing    bool // the binary has no "lookup" command
	runErr     string
}

func (l lookupResult) String() string {
	switch {
	case l.runErr != "":
		return "RUN-ERROR " + l.runErr
	case l.Status == "found":
		r := append([]string(nil), l.Recipients...)
		sort.Strings(r)
		return fmt.Sprint(r)
	case l.Status == "temporary_failure":
		return "temporary_failure (" + l.Error + ")"
	}
	return l.Status
}

// differential alias-Postfix instances (started and stopped by the test;
// stopServers stops them too).
var differentialPostfixes = []struct {
	name, urlKey, dirName, port string
}{
	{"389ds", "DS_URL", "postfix-alias-389ds", "10027"},
	{"slapd", "SLAPD_URL", "postfix-alias-slapd", "10028"},
}

// stopDifferentialPostfixes stops the differential test's Postfixes
// (stopServers calls it: E2E_KEEP=1 keeps them for the next run).
func (s *harness) stopDifferentialPostfixes() {
	for _, p := range differentialPostfixes {
		if _, err := s.runScriptVars("stop-postfix.sh", "PF_DIR="+s.serverDir(p.dirName)); err != nil {
			fmt.Fprintln(os.Stderr, "e2e teardown:", err)
		}
	}
}

func TestDifferentialPostfix(t *testing.T) {
	if len(differentialCases) < 50 {
		t.Fatalf("only %d cases", len(differentialCases))
	}
	seen := map[string]bool{}
	for _, c := range differentialCases {
		if seen[c.addr] {
			t.Fatalf("duplicate case %s", c.addr)
		}
		seen[c.addr] = true
	}
	oracle := map[string]*[]postfixResult{}
	for _, p := range differentialPostfixes {
		t.Run(p.name, func(t *testing.T) {
			url := suite.servers[p.urlKey]
			if url == "" {
				t.Fatalf("%s not started by TestMain (servers: %v)", p.urlKey, suite.servers)
			}
			got := new([]postfixResult)
			oracle[p.name] = got
			differential(t, url, suite.serverDir(p.dirName), p.port, got)
		})
	}
	// The corpus is meant to behave the same on both servers: if Postfix
	// itself sees a difference, the schema or the data drifted.
	a, b := *oracle[differentialPostfixes[0].name], *oracle[differentialPostfixes[1].name]
	if a != nil && b != nil {
		for i, c := range differentialCases {
			if a[i].String() != b[i].String() {
				t.Errorf("Postfix expands %s differently on %s (%s) and %s (%s)", c.addr,
					differentialPostfixes[0].name, a[i], differentialPostfixes[1].name, b[i])
			}
		}
	}
}

// differential runs every case against one directory server and stores what
// Postfix did in *oracle (before any skip or failure of the comparison).
func differential(t *testing.T, ldapURL, pfDir, pfPort string, oracle *[]postfixResult) {
	t0 := time.Now()
	// the map, pointing at this server; a directory that survives E2E_KEEP=1
	// (a kept Postfix keeps reading it)
	mapDir := pfDir + ".map"
	if err := os.MkdirAll(mapDir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join("testdata", "differential.cf"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^server_host\s*=.*$`)
	if !re.Match(src) {
		t.Fatal("testdata/differential.cf has no server_host line")
	}
	cf := filepath.Join(mapDir, "differential.cf")
	if err := os.WriteFile(cf, re.ReplaceAll(src, []byte("server_host = "+ldapURL)), 0o644); err != nil {
		t.Fatal(err)
	}
	// Postfix waits ~2 s before it reads a .cf modified in the current second
	// (it may be mid-edit), in "postfix start" and in every new cleanup: date it back.
	old := time.Now().Add(-time.Minute)
	if err := os.Chtimes(cf, old, old); err != nil {
		t.Fatal(err)
	}

	// a fresh oracle Postfix (a kept one could have an older main.cf)
	pf := suite.startFreshPostfix(t, pfDir, pfPort, "postfix-alias.test", "virtual_alias_maps = ldap:"+cf+"\n"+
		"recipient_delimiter = +\n"+
		"propagate_unmatched_extensions = canonical, virtual\n")
	t.Cleanup(func() {
		if os.Getenv("E2E_KEEP") != "1" {
			os.RemoveAll(mapDir)
		}
	})
	tStarted := time.Now()

	n := len(differentialCases)
	pfRes := make([]postfixResult, n)
	lkRes := make([]lookupResult, n)
	toks := make([]string, n)
	run := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	for i := range toks {
		toks[i] = fmt.Sprintf("differential-%s-%s-%03d.", run, filepath.Base(pfDir), i)
	}

	var wg sync.WaitGroup
	sendSem := make(chan struct{}, 32)
	lookSem := make(chan struct{}, 6)
	for i, c := range differentialCases {
		wg.Add(2)
		go func() {
			defer wg.Done()
			sendSem <- struct{}{}
			defer func() { <-sendSem }()
			pfRes[i] = sendOracle(pf["PF_SMTP"], toks[i], c.addr)
		}()
		go func() {
			defer wg.Done()
			lookSem <- struct{}{}
			defer func() { <-lookSem }()
			lkRes[i] = mailfwdLookup(cf, c.addr)
		}()
	}
	wg.Wait()
	tSent := time.Now()

	// wait for every queued message to be finished (qmgr "removed"), or to
	// have a deferred/bounced recipient in the maillog
	logPath := pf["PF_LOG"]
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(logPath)
		if err != nil {
			t.Fatal(err)
		}
		log := string(b)
		pending := 0
		for i := range pfRes {
			r := &pfRes[i]
			if r.queueID == "" || r.removed {
				continue
			}
			r.logStatus = r.logStatus[:0]
			for _, l := range strings.Split(log, "\n") {
				if !strings.Contains(l, " "+r.queueID+": ") {
					continue
				}
				if strings.HasSuffix(l, " "+r.queueID+": removed") {
					r.removed = true
				}
				if strings.Contains(l, " to=<") && !strings.Contains(l, "status=sent") {
					r.logStatus = append(r.logStatus, l[strings.Index(l, " to=<")+1:])
					if strings.Contains(l, "Alias expansion error") {
						r.aliasError = true
					}
				}
			}
			if !r.removed && len(r.logStatus) == 0 {
				pending++
			}
		}
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d messages not finished by Postfix after 30 s (maillog %s)", pending, logPath)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	dumps, err := ReadSinkDumps(suite.servers["SINK_DIR"])
	if err != nil {
		t.Fatal(err)
	}
	for i := range pfRes {
		for _, d := range dumps {
			if bytes.Contains(d.Raw, []byte(toks[i])) {
				pfRes[i].rcpts = append(pfRes[i].rcpts, d.Rcpts...)
			}
		}
		sort.Strings(pfRes[i].rcpts)
	}
	*oracle = pfRes
	tDone := time.Now()

	// compare
	var out strings.Builder
	tw := tabwriter.NewWriter(&out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "address\tPostfix delivered\tmailfwd lookup\tproblem")
	var diffs strings.Builder
	dw := tabwriter.NewWriter(&diffs, 0, 0, 2, ' ', 0)
	fmt.Fprintln(dw, "address\twhy\tPostfix delivered\tmailfwd lookup\tproblem")
	missing, nd := 0, 0
	for i, c := range differentialCases {
		p, l := pfRes[i], lkRes[i]
		if l.missing {
			missing++
		}
		problem := compareDifferential(c.addr, p, l)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.addr, p, l, problem)
		if problem != "" && !l.missing {
			nd++
			fmt.Fprintf(dw, "%s\t%s\t%s\t%s\t%s\n", c.addr, c.why, p, l, problem)
		}
	}
	tw.Flush()
	dw.Flush()
	t.Logf("directory %s, oracle Postfix %s (maillog %s)\n%s", ldapURL, pf["PF_SMTP"], logPath, out.String())
	t.Logf("timings: Postfix start %v, sends+lookups %v, Postfix finished %v, total %v",
		tStarted.Sub(t0).Round(time.Millisecond), tSent.Sub(tStarted).Round(time.Millisecond),
		tDone.Sub(tSent).Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	for i, c := range differentialCases {
		if p := pfRes[i]; p.rejected || (!p.aliasError && (!p.removed || len(p.logStatus) > 0)) {
			t.Errorf("harness: Postfix did not deliver %s cleanly: %s", c.addr, p)
		}
	}
	if nd > 0 {
		t.Errorf("%d of %d addresses differ between Postfix and mailfwd lookup (%s):\n%s", nd, n, ldapURL, diffs.String())
	}
	if missing > 0 {
		t.Errorf("%s: mailfwd lookup unusable for %d addresses (see the table above)", suite.binary, missing)
	}
}

// compareDifferential returns "" when mailfwd's answer agrees with what
// Postfix did, else what is wrong.
func compareDifferential(addr string, p postfixResult, l lookupResult) string {
	if l.missing {
		return "(no mailfwd lookup)"
	}
	if l.runErr != "" {
		return "mailfwd lookup failed"
	}
	wantExit := map[string]int{"found": 0, "not_found": 1, "temporary_failure": 75}
	if e, ok := wantExit[l.Status]; !ok {
		return fmt.Sprintf("unknown status %q", l.Status)
	} else if e != l.exit {
		return fmt.Sprintf("exit %d for status %s, want %d", l.exit, l.Status, e)
	}
	if p.rejected {
		return "Postfix rejected it (harness)"
	}
	switch l.Status {
	case "found":
		if p.aliasError {
			return "Postfix: alias expansion error; mailfwd: found"
		}
		got := append([]string(nil), l.Recipients...)
		sort.Strings(got)
		if strings.Join(got, "\n") != strings.Join(p.rcpts, "\n") {
			return "recipients differ"
		}
	case "not_found":
		if p.aliasError {
			return "Postfix: alias expansion error; mailfwd: not found"
		}
		if len(p.rcpts) != 1 || p.rcpts[0] != addr {
			return "mailfwd: not found, but Postfix rewrote it"
		}
	case "temporary_failure":
		if !p.aliasError {
			return "mailfwd: temporary failure, Postfix delivered"
		}
	}
	return ""
}

// sendOracle sends one message for addr with tok in its Subject.
func sendOracle(addr, tok, rcpt string) (r postfixResult) {
	fail := func(err error) postfixResult {
		r.reply = err.Error()
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			r.reply = fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
		}
		if strings.Contains(r.reply, "Alias expansion error") {
			r.aliasError = true
		} else {
			r.rejected = true
		}
		return r
	}
	c, err := smtp.Dial(addr)
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	if err := c.Hello("client.e2e.test"); err != nil {
		return fail(err)
	}
	if err := c.Mail("alice@example.org", nil); err != nil {
		return fail(err)
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return fail(fmt.Errorf("RCPT: %w", err))
	}
	w, err := c.Data()
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(w, "From: alice@example.org\r\nSubject: %s\r\n\r\ndifferential test\r\n", tok)
	resp, err := w.CloseWithResponse()
	if err != nil {
		return fail(err)
	}
	r.reply = resp.StatusText
	if m := regexp.MustCompile(`queued as ([0-9A-Za-z]+)`).FindStringSubmatch(resp.StatusText); m != nil {
		r.queueID = m[1]
	} else {
		r.rejected = true
	}
	c.Quit()
	return r
}

// mailfwdLookup runs `mailfwd lookup -postfix-map cf -json addr`.
func mailfwdLookup(cf, addr string) (l lookupResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, suite.binary, "lookup", "-postfix-map", cf, "-json", addr)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	l.stderr = errb.String()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		l.exit = ee.ExitCode()
	default:
		l.runErr = err.Error()
		return l
	}
	if l.exit == 2 && strings.Contains(l.stderr, `unknown command "lookup"`) {
		l.missing = true
		return l
	}
	if jerr := json.Unmarshal(out.Bytes(), &l); jerr != nil {
		l.runErr = fmt.Sprintf("exit %d, stdout %q is not JSON (%v), stderr %q", l.exit, out.String(), jerr, strings.TrimSpace(l.stderr))
	}
	return l
}
