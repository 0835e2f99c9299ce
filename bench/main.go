// Command bench compares mailfwd with the Postfix setup it replaces
// (Postfix 3.7, virtual_alias_maps = ldap:, postsrsd 1.10) on one machine:
// one seeded 389-DS, smtp-sink as the final destination, smtp-source as the
// load. Runs alternate Postfix, mailfwd, Postfix, mailfwd ...; medians are
// reported and written to docs/benchmarks.md. Needs root (Postfix's master,
// 389-DS, cgroups) and the packages of e2e/scripts/install-deps.sh.
//
//	go run ./bench              # full run (~10-15 min), writes docs/benchmarks.md
//	go run ./bench -quick       # small N, one pair, prints the tables only
//	make bench                  # install-deps.sh, then go run ./bench
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

type scenario struct {
	id, title string
	size      int     // smtp-source -l (payload bytes)
	msgs      int     // N
	share     float64 // share of messages to the external forward (SRS)
}

const (
	rcptRewrite = "sales@company.com"         // -> central@company.com
	rcptForward = "internal.user@company.com" // -> external.user@gmail.com (SRS)
)

// runResult is one measured run.
type runResult struct {
	relay                  string
	accept, e2e            float64 // msgs/s
	cpuPerK                float64 // CPU seconds per 1,000 messages
	rssKB                  int64   // the table's peak: mailfwd VmHWM, Postfix summed Pss
	sampledKB, sampledPss  int64   // sampled peaks of summed Rss and Pss
	searches               float64 // per message
	dsCPUPerK              float64
	machineCPUPerK         float64 // every process and kernel thread, load and sink included
	acceptSecs, e2eSecs    float64
	err                    string
	delivered, expectedMsg int
}

type options struct {
	repo, work, out, logLevel, only string
	pairs, conc, portBase, warm     int
	backlog                         int
	backlogRelay                    string
	directory, directoryMsgs        int
	share, scale                    float64
	keep, quick                     bool
}

func main() {
	var o options
	flag.IntVar(&o.pairs, "pairs", 3, "alternating Postfix/mailfwd pairs per scenario")
	flag.IntVar(&o.conc, "c", 20, "smtp-source sessions in parallel (C)")
	flag.Float64Var(&o.scale, "scale", 1, "multiply every scenario's message count")
	flag.Float64Var(&o.share, "srs-share", 0.5, "share of messages to the external forward in the SRS mix")
	flag.IntVar(&o.portBase, "port-base", 24000, "first of the loopback ports used (+0..+6)")
	flag.IntVar(&o.warm, "warm", 100, "warm-up messages after each relay start (not measured)")
	flag.StringVar(&o.work, "work", "/tmp/mailfwd-bench", "work directory (mailfwd spool, configs, logs)")
	flag.StringVar(&o.out, "out", "docs/benchmarks.md", "markdown report (\"\": stdout only)")
	flag.StringVar(&o.logLevel, "log-level", "warn", "mailfwd log.level")
	flag.StringVar(&o.only, "scenarios", "", "comma-separated scenario ids (default all: rewrite-1k,srs-1k,rewrite-100k,rewrite-10m)")
	flag.IntVar(&o.backlog, "backlog", 0, "also run the backlog scenario with this many messages (next hop down, restart, drain; e.g. 200000); -scenarios none runs it alone")
	flag.IntVar(&o.directory, "directory", 0, "also run the many-recipients scenario with this many directory entries (e.g. 100000; uniform and Zipf recipients); -scenarios none runs it alone")
	flag.IntVar(&o.directoryMsgs, "directory-msgs", 20000, "messages per run of the -directory scenario")
	flag.StringVar(&o.backlogRelay, "backlog-relay", "", "run the backlog scenario through this relay only (mailfwd or Postfix) and print its figures, the report unchanged")
	flag.BoolVar(&o.keep, "keep", false, "leave 389-DS and the Postfix tree in place at the end (and reuse a kept 389-DS at the start)")
	flag.BoolVar(&o.quick, "quick", false, "development run: N/10, 1 pair, report to stdout unless -out is given")
	flag.Parse()
	outSet := false
	flag.Visit(func(f *flag.Flag) { outSet = outSet || f.Name == "out" })
	if o.quick {
		o.scale, o.pairs, o.warm = o.scale/10, 1, 20
		if !outSet {
			o.out = ""
		}
	}
	wd, _ := os.Getwd()
	o.repo = wd
	if _, err := os.Stat(filepath.Join(wd, "e2e/scripts/start-postfix.sh")); err != nil {
		fatal("run from the repository root (go run ./bench)")
	}
	if os.Geteuid() != 0 {
		fatal("needs root: Postfix's master, 389-DS and the CPU cgroups")
	}
	for _, b := range []string{"smtp-source", "smtp-sink", "postsrsd", "postfix", "ns-slapd"} {
		if _, err := exec.LookPath(b); err != nil {
			fatal("%s not installed (e2e/scripts/install-deps.sh)", b)
		}
	}
	if err := run(o); err != nil {
		fatal("%v", err)
	}
}

func fatal(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+f+"\n", a...)
	os.Exit(1)
}

func logf(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s "+f+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

func scenarios(o options) []scenario {
	n := func(x int) int { return max(1, int(math.Round(float64(x)*o.scale))) }
	all := []scenario{
		{"rewrite-1k", "1 KiB, alias rewritten by LDAP", 1024, n(5000), 0},
		{"srs-1k", fmt.Sprintf("1 KiB, %.0f%% external forwards (SRS)", o.share*100), 1024, n(5000), o.share},
		{"rewrite-100k", "100 KiB, alias rewritten by LDAP", 100 * 1024, n(1000), 0},
		{"rewrite-10m", "10 MiB, alias rewritten by LDAP", 10 * 1024 * 1024, max(2, n(20)), 0},
	}
	if o.only == "" {
		return all
	}
	var out []scenario
	for _, s := range all {
		if slices.Contains(strings.Split(o.only, ","), s.id) {
			out = append(out, s)
		}
	}
	return out
}

// loads splits a scenario into smtp-source invocations.
func loads(s scenario, msgs, conc int) []load {
	conc = min(conc, msgs)
	nf := int(math.Round(float64(msgs) * s.share))
	if nf == 0 {
		return []load{{rcptRewrite, msgs, conc}}
	}
	if nf == msgs {
		return []load{{rcptForward, msgs, conc}}
	}
	cf := min(max(1, int(math.Round(float64(conc)*s.share))), conc-1)
	return []load{{rcptRewrite, msgs - nf, max(1, conc-cf)}, {rcptForward, nf, max(1, cf)}}
}

// maxProbeSize is the largest scenario the latency probe runs in: at
// 10 MiB a run holds too few messages for a 99th percentile.
const maxProbeSize = 1 << 20

type env struct {
	o        options
	sinkAddr string
	dsPid    int
	dsAccess string
	pf       *postfixRelay
	mf       *mailfwdRelay
	versions map[string]string
	cmds     []string
}

func run(o options) error {
	p := func(i int) int { return o.portBase + i }
	sinkAddr := fmt.Sprintf("127.0.0.1:%d", p(0))
	e := &env{o: o, sinkAddr: sinkAddr, versions: versions(o.repo)}
	if err := os.MkdirAll(o.work, 0o755); err != nil {
		return err
	}
	os.Chmod(o.work, 0o755)

	// mailfwd binary
	bin := filepath.Join(o.work, "mailfwd")
	logf("building mailfwd")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/mailfwd").CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/mailfwd: %v\n%s", err, out)
	}

	// 389-DS, seeded
	dsDir := "/tmp/mailfwd-bench-389ds"
	dsEnv := []string{"DS_DIR=" + dsDir, fmt.Sprintf("DS_PORT=%d", p(1)), "DS_TLS_PORT=0"}
	if !o.keep { // a tree an earlier run kept may hold other data: start from the seed
		if _, err := runScript(dsEnv, "", filepath.Join(o.repo, "e2e/scripts/stop-389ds.sh")); err != nil {
			return err
		}
	}
	logf("starting 389-DS on 127.0.0.1:%d", p(1))
	ds, err := runScript(dsEnv, "", filepath.Join(o.repo, "e2e/scripts/start-389ds.sh"))
	if err != nil {
		return err
	}
	if !o.keep {
		defer runScript(dsEnv, "", filepath.Join(o.repo, "e2e/scripts/stop-389ds.sh"))
	}
	fmt.Sscan(ds["DS_PID"], &e.dsPid)
	e.dsAccess = filepath.Join(ds["DS_LOG"], "access")
	dsURL := ds["DS_URL"]

	// shared secrets and maps
	secrets := filepath.Join(o.work, "srs.secrets")
	pw := filepath.Join(o.work, "ldap.secret")
	os.WriteFile(secrets, []byte("bench-srs-secret\n"), 0o644)
	os.WriteFile(pw, []byte("postfix-ldap-secret\n"), 0o600)
	ldapCF := filepath.Join(o.work, "bench-ldap.cf")
	os.WriteFile(ldapCF, []byte(fmt.Sprintf(`server_host = %s
search_base = dc=example,dc=net
bind = yes
bind_dn = uid=postfix-ldap,ou=system,dc=example,dc=net
bind_pw = postfix-ldap-secret
query_filter = (|(mail=%%s)(mailAlternateAddress=%%s))
result_attribute = mailForwardingAddress
version = 3
`, dsURL)), 0o644)
	old := time.Now().Add(-time.Minute) // Postfix waits ~2 s for a map modified this second
	os.Chtimes(ldapCF, old, old)

	// Postfix + postsrsd
	pfDir := "/tmp/mailfwd-bench-postfix"
	extra := strings.Join([]string{
		"virtual_alias_maps = ldap:" + ldapCF,
		"relay_domains = domain.com domain.ro company.com",
		fmt.Sprintf("sender_canonical_maps = tcp:127.0.0.1:%d", p(3)),
		"sender_canonical_classes = envelope_sender",
		fmt.Sprintf("recipient_canonical_maps = tcp:127.0.0.1:%d", p(4)),
		"recipient_canonical_classes = envelope_recipient, header_recipient",
		"message_size_limit = 52428800",
	}, "\n")
	e.pf = &postfixRelay{repo: o.repo, dir: pfDir, port: p(2),
		env: []string{"PF_DIR=" + pfDir, fmt.Sprintf("PF_PORT=%d", p(2)), fmt.Sprintf("SINK_PORT=%d", p(0)),
			"PF_HOSTNAME=postfix.bench.test", "PF_MAIN_EXTRA=" + extra},
		srsArgs: []string{"-s", secrets, "-d", "srs.bench.test", "-f", fmt.Sprint(p(3)), "-r", fmt.Sprint(p(4)),
			"-l", "127.0.0.1", "-4"},
		srsLog: filepath.Join(o.work, "postsrsd.log"), srsPorts: [2]int{p(3), p(4)}}
	if os.Geteuid() == 0 {
		e.pf.srsArgs = append(e.pf.srsArgs, "-u", "nobody")
	}
	e.pf.group = newCPUGroup("mailfwd-bench-postfix", e.pf.roots)
	defer e.pf.group.remove()
	if err := e.pf.destroy(); err != nil { // a tree from an earlier run may have other settings
		return err
	}
	if !o.keep {
		defer e.pf.destroy()
	} else {
		defer e.pf.stop()
	}
	if err := e.pf.startSRS(); err != nil {
		return err
	}
	defer e.pf.stopSRS()

	// mailfwd
	spool := filepath.Join(o.work, "spool")
	os.RemoveAll(spool)
	mcfg := filepath.Join(o.work, "mailfwd.yaml")
	os.WriteFile(mcfg, []byte(fmt.Sprintf(`# written by bench/main.go
hostname: mailfwd.bench.test
listen: ["127.0.0.1:%d"]
admin_listen: 127.0.0.1:%d   # the replica's state (bench/directory.go)
relay_domains: [domain.com, domain.ro, company.com]
spool_dir: %s
limits:
  max_connections_per_ip: 1000      # Postfix side: smtpd_client_connection_count_limit = 0
  connection_rate_per_ip: 100000000 # and smtpd_client_connection_rate_limit = 0
directory:
  ldap:
    servers: [%s]
    bind_dn: uid=postfix-ldap,ou=system,dc=example,dc=net
    bind_password_file: %s
    search_base: dc=example,dc=net
    query_filter: "(|(mail=%%s)(mailAlternateAddress=%%s))"
    result_attributes: [mailForwardingAddress]
srs:
  domain: srs.bench.test
  secrets_file: %s
delivery:
  next_hop: %s
  external_next_hop: %s
log:
  level: %s
`, p(5), p(6), spool, dsURL, pw, secrets, sinkAddr, sinkAddr, o.logLevel)), 0o644)
	e.mf = &mailfwdRelay{bin: bin, config: mcfg, listen: fmt.Sprintf("127.0.0.1:%d", p(5)), admin: fmt.Sprintf("127.0.0.1:%d", p(6)),
		logFile: filepath.Join(o.work, "mailfwd.log")}
	e.mf.group = newCPUGroup("mailfwd-bench-mailfwd", func() []int {
		if e.mf.cmd != nil && e.mf.cmd.Process != nil {
			return []int{e.mf.cmd.Process.Pid}
		}
		return nil
	})
	defer e.mf.group.remove()
	if out, err := exec.Command(bin, "check-config", "-config", mcfg).CombinedOutput(); err != nil {
		return fmt.Errorf("mailfwd check-config: %v: %s", err, out)
	}

	e.cmds = []string{
		fmt.Sprintf("smtp-sink -c -4 -h sink.bench.test -m 512 -u nobody %s 512", sinkAddr),
		"smtp-source -4 -s C -m N -l SIZE -M client.bench.test -f sender@example.org -t RCPT 127.0.0.1:PORT",
		fmt.Sprintf("postsrsd %s", strings.Join(e.pf.srsArgs, " ")),
		"PF_DIR=" + pfDir + " PF_PORT=" + fmt.Sprint(p(2)) + " SINK_PORT=" + fmt.Sprint(p(0)) + " PF_MAIN_EXTRA='" + extra + "' e2e/scripts/start-postfix.sh",
		"mailfwd serve -config " + mcfg,
	}

	results := map[string][]runResult{}
	lats := map[string][]latency{}
	var order []scenario
	start := time.Now()
	for _, s := range scenarios(o) {
		order = append(order, s)
		logf("scenario %s: %d × %d B at C=%d, %d pairs", s.id, s.msgs, s.size, o.conc, o.pairs)
		for i := 0; i < o.pairs; i++ {
			for _, r := range []relay{e.pf, e.mf} {
				res := e.measure(r, s)
				results[s.id] = append(results[s.id], res)
				logf("  %-8s accept %7.1f/s  e2e %7.1f/s  cpu %6.2f s/1k  rss %6.1f MiB  srch/msg %.3f  ds-cpu %.2f s/1k %s",
					res.relay, res.accept, res.e2e, res.cpuPerK, float64(res.rssKB)/1024, res.searches, res.dsCPUPerK, res.err)
			}
		}
		if s.size <= maxProbeSize {
			for i := 0; i < o.pairs; i++ {
				for _, r := range []relay{e.pf, e.mf} {
					l := e.measureLatency(r, s)
					lats[s.id] = append(lats[s.id], l)
					logf("  %-8s latency probe: %d messages, p50 %.1f ms, p99 %.1f ms, max %.1f ms %s", l.relay, l.n, l.p50, l.p99, l.max, l.err)
				}
			}
		}
		for i := 0; i < o.pairs; i++ {
			res := e.measureDirect(s)
			results[s.id] = append(results[s.id], res)
			logf("  %-8s %7.1f/s %s", res.relay, res.e2e, res.err)
		}
	}
	var backlog string
	if o.backlog > 0 {
		t0 := time.Now()
		var rs []backlogResult
		logf("scenario backlog: %d × 1 KiB with the next hop down, restart, drain", o.backlog)
		for _, r := range []relay{e.pf, e.mf} {
			if o.backlogRelay != "" && !strings.EqualFold(o.backlogRelay, r.name()) {
				continue
			}
			rs = append(rs, e.measureBacklog(r, o.backlog))
			if err := rs[len(rs)-1].err; err != "" {
				logf("  %-8s %s", r.name(), err)
			}
		}
		backlog = e.backlogSection(o.backlog, rs, time.Since(t0))
	}
	var directory string
	if o.directory > 0 {
		var err error
		if directory, err = e.runDirectory(dsURL, ds["DS_ROOT_DN"], ds["DS_ROOT_PW"]); err != nil {
			return err
		}
	}
	if len(order) == 0 { // the backlog or directory alone: the rest of the report stays
		if o.out == "" || o.backlogRelay != "" {
			fmt.Print(backlog + directory)
			return nil
		}
		for _, sec := range []struct{ begin, end, text string }{{backlogBegin, backlogEnd, backlog}, {directoryBegin, directoryEnd, directory}} {
			if sec.text != "" {
				logf("writing a section of %s", o.out)
				if err := writeSection(o.out, sec.begin, sec.end, sec.text); err != nil {
					return err
				}
			}
		}
		return nil
	}
	md := e.report(order, results, lats, time.Since(start))
	if o.out == "" {
		fmt.Print(md + backlog)
		return nil
	}
	if extra, err := os.ReadFile(filepath.Join(o.repo, "bench/analysis.md")); err == nil {
		md += "\n" + string(extra)
	}
	// Sections of earlier -backlog and -directory runs are kept.
	earlier, _ := os.ReadFile(o.out)
	logf("writing %s", o.out)
	if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
		return err
	}
	for _, sec := range []struct{ begin, end, text string }{{backlogBegin, backlogEnd, backlog}, {directoryBegin, directoryEnd, directory}} {
		if sec.text == "" {
			s := string(earlier)
			if i, j := strings.Index(s, sec.begin), strings.Index(s, sec.end); i >= 0 && j > i {
				sec.text = s[i:j+len(sec.end)] + "\n"
			}
		}
		if sec.text != "" {
			if err := writeSection(o.out, sec.begin, sec.end, sec.text); err != nil {
				return err
			}
		}
	}
	return nil
}

// measure does one run of scenario s through relay r: fresh sink and relay,
// warm-up, then N messages. The measured window starts when smtp-source
// starts and ends when the sink counted N (plus 300 ms for queue clean-up).
func (e *env) measure(r relay, s scenario) (res runResult) {
	res = runResult{relay: r.name(), expectedMsg: s.msgs}
	fail := func(err error) runResult { res.err = err.Error(); return res }
	sk, done, err := e.prepare(r, s)
	if err != nil {
		return fail(err)
	}
	defer done()
	base := sk.counter.count()
	cpu0, ds0, off0, mc0 := r.cpu().seconds(), dsCPU(e.dsPid), fileSize(e.dsAccess), machineCPU()
	sampler := sampleRSS(r.rssPids, 100*time.Millisecond)
	t0 := time.Now()
	tAcc, srcErr := runSources(r.addr(), s.size, loads(s, s.msgs, e.o.conc))
	timeout := 120*time.Second + time.Duration(s.msgs)*20*time.Millisecond + time.Duration(s.msgs*s.size/(1<<20))*time.Second
	tEnd, ok := sk.counter.waitFor(base+s.msgs, timeout)
	time.Sleep(300 * time.Millisecond)
	cpu1, ds1, mc1 := r.cpu().seconds(), dsCPU(e.dsPid), machineCPU()
	res.sampledKB, res.sampledPss = sampler.finish()
	res.rssKB = r.peakRSS(res.sampledPss)
	srch := countSearches(e.dsAccess, off0)
	res.delivered = sk.counter.count() - base
	res.acceptSecs, res.e2eSecs = tAcc.Sub(t0).Seconds(), tEnd.Sub(t0).Seconds()
	res.accept = float64(s.msgs) / res.acceptSecs
	res.e2e = float64(s.msgs) / res.e2eSecs
	res.cpuPerK = (cpu1 - cpu0) / float64(s.msgs) * 1000
	res.dsCPUPerK = (ds1 - ds0) / float64(s.msgs) * 1000
	res.machineCPUPerK = (mc1 - mc0) / float64(s.msgs) * 1000
	res.searches = float64(srch) / float64(s.msgs)
	if srcErr != nil {
		res.err = srcErr.Error()
	}
	if !ok {
		res.err += fmt.Sprintf(" sink counted %d of %d", res.delivered, s.msgs)
		res.e2e = 0
	}
	return res
}

// prepare starts a fresh sink and relay r and warms them up; done stops
// both.
func (e *env) prepare(r relay, s scenario) (sk *sink, done func(), err error) {
	if sk, err = startSink(e.sinkAddr); err != nil {
		return nil, nil, err
	}
	if err := r.start(); err != nil {
		sk.stop()
		return nil, nil, err
	}
	done = func() { r.stop(); sk.stop() }
	if err := e.warmUp(r, s, sk); err != nil {
		done()
		return nil, nil, err
	}
	return sk, done, nil
}

// warmUp sends the warm-up messages (1 KiB, the scenario's recipients) and
// waits for the sink to count them: daemons started, connections open,
// caches filled.
func (e *env) warmUp(r relay, s scenario, sk *sink) error {
	if e.o.warm == 0 {
		return nil
	}
	if _, err := runSources(r.addr(), 1024, loads(s, e.o.warm, e.o.conc)); err != nil {
		return fmt.Errorf("warm-up: %v", err)
	}
	if _, ok := sk.counter.waitFor(e.o.warm, 60*time.Second); !ok {
		return fmt.Errorf("warm-up: sink counted %d of %d", sk.counter.count(), e.o.warm)
	}
	time.Sleep(300 * time.Millisecond)
	return nil
}

// measureDirect is the bound: smtp-source straight into smtp-sink.
func (e *env) measureDirect(s scenario) runResult {
	res := runResult{relay: "direct", expectedMsg: s.msgs}
	sk, err := startSink(e.sinkAddr)
	if err != nil {
		res.err = err.Error()
		return res
	}
	defer sk.stop()
	t0 := time.Now()
	tAcc, err := runSources(e.sinkAddr, s.size, loads(s, s.msgs, e.o.conc))
	tEnd, ok := sk.counter.waitFor(s.msgs, 60*time.Second)
	if err != nil {
		res.err = err.Error()
	}
	if !ok {
		res.err += " sink short"
	}
	res.acceptSecs, res.e2eSecs = tAcc.Sub(t0).Seconds(), tEnd.Sub(t0).Seconds()
	res.accept, res.e2e = float64(s.msgs)/res.acceptSecs, float64(s.msgs)/res.e2eSecs
	return res
}

func dsCPU(pid int) float64 {
	st := readStat(pid)
	return float64(st.utime+st.stime) / clockTicks
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func versions(repo string) map[string]string {
	sh := func(c string) string {
		cmd := exec.Command("sh", "-c", c)
		cmd.Dir = repo
		out, err := cmd.Output()
		if err != nil {
			return "?"
		}
		return strings.TrimSpace(string(out))
	}
	cpu := sh(`grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-`)
	return map[string]string{
		"mailfwd":  sh("git describe --always --dirty 2>/dev/null || git rev-parse --short HEAD"),
		"postfix":  sh("postconf -dh mail_version"),
		"389-ds":   sh("dpkg-query -W -f='${Version}' 389-ds-base"),
		"postsrsd": sh("dpkg-query -W -f='${Version}' postsrsd"),
		"go":       runtime.Version(),
		"nproc":    fmt.Sprint(runtime.NumCPU()),
		"cpu":      strings.TrimSpace(cpu),
		"kernel":   sh("uname -sr"),
		"os":       sh(`. /etc/os-release && echo "$PRETTY_NAME"`),
		"fs":       sh(`df -T /tmp | awk 'NR==2 {print $2 " (" $1 ")"}'`),
		"mem":      sh(`awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo`),
	}
}
