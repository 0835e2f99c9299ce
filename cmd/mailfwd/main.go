// Command mailfwd is the relay and its tools:
//
//	mailfwd serve [-config FILE]         run the relay (no -config: the embedded default)
//	mailfwd check-config [-config FILE]  validate a config file and exit
//	mailfwd sink [-listen ADDR] [-dir D] a tiny SMTP server printing what it receives (demo next hop)
//	mailfwd send [-server ADDR] -to A    send one test message
//	mailfwd lookup [-v] [-json] ADDRESS  where mail for ADDRESS goes (-v: and under which outbound TLS)
//	mailfwd queue list|show|flush|hold|release|delete|quarantine   the spool of a relay
//	mailfwd health [-url URL]            ask a running relay's admin listener
//	mailfwd srs forward|reverse ...      SRS-rewrite a sender, decode a bounce address
//	mailfwd tls-report [-day D] [-send]  a day's TLS-RPT reports
//
// The wiring of the relay from its config is wire.go (and outbound.go for
// delivery's DNS, DANE, MTA-STS and TLS-RPT); serve.go runs what it built:
// listeners, signals, reloads, the orderly stop.
package main

import (
	"errors"
	"fmt"
	"os"
)

const usage = `usage: mailfwd <command> [flags]

commands:
  serve         run the relay (-config FILE; without it, the embedded default)
  check-config  validate a config file (-config FILE) and exit non-zero on error
  sink          a minimal SMTP server that prints each message it receives
  send          send one test message through an SMTP server
  lookup        show where mail for an address goes (-config FILE | -postfix-map FILE.cf)
  queue         list | show ID | flush [ID] | hold ID | release ID | delete ID (-config FILE)
  health        ask a running relay's admin listener if it is healthy (-url URL); exit 0 if so
  srs           SRS-rewrite a sender or decode a bounce address (forward|reverse -secrets FILE -domain D)
  tls-report    print or send (-send) a day's TLS-RPT reports (-config FILE -day YYYY-MM-DD|yesterday|today)

"mailfwd <command> -h" shows a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "serve":
		err = serve(args)
	case "check-config":
		err = checkConfig(args)
	case "sink":
		err = sink(args)
	case "send":
		err = send(args)
	case "lookup":
		err = lookup(args, os.Stdout, os.Stderr)
	case "queue":
		err = queueCommand(args, os.Stdout)
	case "health":
		err = health(args, os.Stdout)
	case "srs":
		err = srsCommand(args)
	case "tls-report":
		err = tlsReport(args, os.Stdout, os.Stderr)
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "mailfwd: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	var ee errExit
	switch {
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintf(os.Stderr, "mailfwd %s: %s\n", os.Args[1], ee.msg)
		}
		os.Exit(ee.code)
	case err != nil:
		fmt.Fprintf(os.Stderr, "mailfwd %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
