package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"mailfwd/routing"
	"mailfwd/routing/directory"
)

// Exit codes of `mailfwd lookup`, as postmap and sysexits(3) use them.
const (
	exitFound    = 0
	exitNotFound = 1
	exitTempFail = 75 // EX_TEMPFAIL: try again later
)

// errExit carries an exit code out of a command.
type errExit struct {
	code int
	msg  string
}

func (e errExit) Error() string { return e.msg }

type lookupResult struct {
	Address    string         `json:"address"`
	Status     string         `json:"status"` // found, not_found, temporary_failure
	Recipients []string       `json:"recipients"`
	Error      string         `json:"error,omitempty"`
	Steps      []routing.Step `json:"steps,omitempty"`
}

// lookup answers "where does mail for ADDRESS go?" with the same routing
// the relay uses, or with a Postfix ldap_table file as Postfix would.
func lookup(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lookup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "mailfwd config file (default: the embedded default)")
	pfMap := fs.String("postfix-map", "", "a Postfix ldap_table(5) .cf file: expand as Postfix's virtual_alias_maps would")
	verbose := fs.Bool("v", false, "print the expansion tree: source, entry DN and attribute of each step")
	asJSON := fs.Bool("json", false, "print one JSON object per address")
	timeout := fs.Duration("timeout", 30*time.Second, "give up (exit 75) after this long")
	replicaWait := fs.Duration("replica-wait", 10*time.Second, "how long to wait for the directory replica to sync before answering from live queries")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: mailfwd lookup [-config FILE | -postfix-map FILE.cf] [-v] [-json] ADDRESS...\n"+
			"Prints the final recipients of each ADDRESS, one per line. Exit 0: found; 1: not found; 75: temporary failure.\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return errExit{2, err.Error()}
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errExit{2, "no address given"}
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	var exp *routing.Expander
	var explain func(ctx context.Context, rcpt string) []string // external forwards' delivery, for -v
	switch {
	case *pfMap != "" && *cfgPath != "":
		return errExit{2, "use -config or -postfix-map, not both"}
	case *pfMap != "":
		src, err := postfixMapSource(*pfMap, log)
		if err != nil {
			return errExit{2, err.Error()}
		}
		// Postfix's virtual_alias_maps with its defaults.
		exp = &routing.Expander{Source: src, Limits: routing.PostfixLimits, Delimiter: "+", CatchAll: true, KeepExtension: true}
	default:
		c, _, err := loadConfig(flag.NewFlagSet("lookup", flag.ContinueOnError), configArgs(*cfgPath))
		if err != nil {
			return errExit{2, err.Error()}
		}
		var replica *directory.Replica
		if exp, replica, err = newExpander(c, log); err != nil {
			return errExit{2, err.Error()}
		}
		if *verbose && c.Delivery.ExternalNextHop == "" {
			if explain, err = outboundExplainer(c, log); err != nil {
				return errExit{2, err.Error()}
			}
		}
		if replica != nil {
			// As the relay would answer: from the replica once it is in
			// sync (a directory's refresh takes seconds), else live.
			rctx, stop := context.WithCancel(context.Background())
			defer stop()
			go replica.Run(rctx)
			for deadline := time.Now().Add(*replicaWait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if st := replica.Stats().State; st != "starting" && st != "refreshing" {
					break // in sync, or its first attempt failed: live queries then
				}
			}
			if *verbose && !*asJSON {
				defer func() { printReplica(stdout, replica) }()
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	code := exitFound
	for _, addr := range fs.Args() {
		r := lookupResult{Address: addr, Recipients: []string{}}
		// the relay's parser: what it refuses at RCPT is not looked up
		mbox, perr := rcptAddress(addr)
		if perr != nil {
			r.Status, r.Error = "refused", perr.Error()
			code = max(code, exitNotFound)
			fmt.Fprintf(stderr, "mailfwd lookup: %s: %v\n", addr, perr)
			if *asJSON {
				b, _ := json.Marshal(r)
				fmt.Fprintf(stdout, "%s\n", b)
			}
			continue
		}
		x, err := exp.Trace(ctx, mbox)
		switch {
		case err == nil:
			r.Status, r.Recipients = "found", x.Recipients
		case errors.Is(err, routing.ErrNotFound):
			r.Status = "not_found"
			code = max(code, exitNotFound)
		default:
			r.Status, r.Error = "temporary_failure", err.Error()
			code = exitTempFail
			fmt.Fprintf(stderr, "mailfwd lookup: %s: %v\n", addr, err)
		}
		if *verbose && x != nil {
			r.Steps = x.Steps
		}
		switch {
		case *asJSON:
			b, _ := json.Marshal(r)
			fmt.Fprintf(stdout, "%s\n", b)
		case *verbose:
			printTree(stdout, r, x)
			if explain != nil {
				for _, rc := range r.Recipients {
					for _, l := range explain(ctx, rc) {
						fmt.Fprintln(stdout, l)
					}
				}
			}
		default:
			for _, rc := range r.Recipients {
				fmt.Fprintln(stdout, rc)
			}
		}
	}
	if code != exitFound {
		return errExit{code, ""}
	}
	return nil
}

func configArgs(path string) []string {
	if path == "" {
		return nil
	}
	return []string{"-config", path}
}

// printTree shows how an address expanded, one step per line, indented by
// depth, then the final recipients.
// printReplica says where the answers came from: the replica in sync
// ("replica of URL" in the tree), or live queries and why.
func printReplica(w io.Writer, r *directory.Replica) {
	st := r.Stats()
	if r.Synced() {
		fmt.Fprintf(w, "directory: replica in sync with %s (%d entries, confirmed %v ago): answers without LDAP queries, changes seen within a second\n",
			st.Server, st.Entries, st.Lag.Round(time.Millisecond))
		return
	}
	fmt.Fprintf(w, "directory: replica %s: answers are live LDAP queries (the relay caches them: directory.cache)\n", st.State)
}

func printTree(w io.Writer, r lookupResult, x *routing.Expansion) {
	fmt.Fprintf(w, "%s: %s\n", r.Address, strings.ReplaceAll(r.Status, "_", " "))
	if x != nil {
		for _, s := range x.Steps {
			ind := strings.Repeat("  ", s.Depth+1)
			if s.Key == "" {
				fmt.Fprintf(w, "%s%s: not in the directory: final\n", ind, s.Address)
				continue
			}
			fmt.Fprintf(w, "%s%s: key %s\n", ind, s.Address, s.Key)
			for _, m := range s.Matches {
				fmt.Fprintf(w, "%s  ← %s", ind, m.Value)
				if m.Source != "" {
					fmt.Fprintf(w, "  [%s", m.Source)
					if m.DN != "" {
						fmt.Fprintf(w, " dn=%q", m.DN)
					}
					if m.Attribute != "" {
						fmt.Fprintf(w, " attr=%s", m.Attribute)
					}
					fmt.Fprint(w, "]")
				}
				fmt.Fprintln(w)
			}
			if s.Final {
				fmt.Fprintf(w, "%s  (maps to itself: delivered)\n", ind)
			}
		}
	}
	if r.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", r.Error)
	}
	for _, rc := range r.Recipients {
		fmt.Fprintf(w, "→ %s\n", rc)
	}
}

// rcptAddress is what the relay makes of addr at RCPT: go-smtp's path
// parser (the same the server runs), then routing's. An address either
// refuses answers 501 there.
func rcptAddress(addr string) (string, error) {
	mbox, err := smtp.ParsePath(addr)
	if err != nil {
		return "", fmt.Errorf("501 5.1.3 bad recipient address syntax (%v)", err)
	}
	if _, err := routing.ParseAddress(mbox); err != nil {
		return "", fmt.Errorf("501 5.1.3 bad recipient address syntax (%v)", err)
	}
	return routing.WireForm(mbox), nil // looked up in wire form, as the relay does
}
