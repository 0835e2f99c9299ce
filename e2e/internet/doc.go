//go:build e2e

// Package internet is a small simulated Internet made of real Debian
// servers in network namespaces, for testing the outbound mail security
// of an SMTP sender (mailfwd) running on this host: DANE, MTA-STS,
// TLS-RPT, plain and broken TLS, null MX, backup MXes and bogus DNSSEC.
//
// # Hosts and addresses
//
// Every host is a network namespace named mfwnet-NAME, joined to this
// host by a veth pair: the host side mfwnet-vN is 10.98.N.1/24, the
// namespace's eth0 is 10.98.N.2/24. This host reaches every host's address
// directly. A namespace has a route to 10.98.0.0/16 via its 10.98.N.1 and
// no default route, and forwarding is enabled only on the mfwnet-vN links
// (net.ipv4.conf.mfwnet-vN.forwarding=1; net.ipv4.ip_forward is left as it
// is): hosts reach each other through this host, and nothing in a
// namespace can send a packet anywhere else. IPv4 only.
//
//	10.98.1.2   mfwnet-dns       knot, authoritative for every zone (ns1.nic.test)
//	10.98.2.2   mfwnet-resolver  unbound, validating recursive resolver: Net.Resolver()
//	10.98.3.2   mfwnet-web       nginx: https://mta-sts.<domain>/.well-known/mta-sts.txt
//	10.98.4.2   mfwnet-report    Go HTTPS TLS-RPT endpoint https://tlsrpt.report.test/
//	10.98.5.2   mfwnet-client    runs real clients (posttls-finger, curl): its
//	                             /etc/netns/mfwnet-client/resolv.conf names the
//	                             resolver with "options trust-ad"
//	10.98.10.2… mfwnet-mxK, …    AddMX / AddHost, in the order they are made
//
// In Standard, the hosts from 10.98.10.2 on are: mx.report.test (.10),
// mx.dane.test (.11), mx.dane-mismatch.test (.12), mx.sts-enforce.test
// (.13), mx.sts-badcert.test (.14), mx.sts-testing.test (.15),
// mx.notls.test (.16), mx1.backup.test (down, .17), mx2.backup.test (.18),
// mx.bogus.test (.19). Use the fields of Scenario rather than these numbers.
//
// # DNS and how DNSSEC trust is set up
//
// knot serves a private root zone ".", the TLD "test." and one zone per
// test domain (AddZone), all on ns1.nic.test. Each zone is delegated from
// its closest enclosing zone. The signing keys (one ECDSA P-256 CSK per
// signed zone) are made with keymgr before knot starts, so their DS
// records are written into the parent zones; knot then signs every
// Signed and Bogus zone itself (dnssec-signing: on, a "manual" policy that
// uses those keys). A Signed zone's DS is published in its parent; an
// Unsigned zone is delegated without DS (insecure: answers without AD); a
// Bogus zone is signed but its parent publishes a DS whose digest is
// altered, so validation fails and unbound answers SERVFAIL (with the
// extended error "DS hash mismatches key"; +cd shows the data).
//
// unbound resolves from the root like a real resolver: its root-hints name
// ns1.nic.test at knot's address, and its only trust anchor is the DS of
// the root zone's key ("trust-anchor:"); the chain of trust runs . → test.
// → <zone>. It listens on 10.98.2.2:53 (UDP and TCP), allows queries from
// 10.98.0.0/16 and 127.0.0.0/8, sets AD on secure answers, and has
// "local-zone: test. nodefault" (unbound would otherwise answer test.
// itself, as a special-use name). Names outside the zones are NXDOMAIN,
// proven by the signed root. Nothing is ever asked of the real Internet.
// Zones, records, MXes and policies are fixed at Start (no updates).
//
// # Receiving MTAs
//
// AddMX starts a Debian Postfix (postfix -c DIR start, own main.cf,
// master.cf, queue and data directories, maillog_file) in a host of its
// own: smtpd on 10.98.N.2:25, myhostname the MX's name, mail for its
// domains (any local part) delivered by virtual(8) into one maildir
// (MX.Messages, MX.WaitMessages), smtpd_tls_received_header = yes (the
// Received header carries "(using TLSv1.3 with cipher …)", parsed into
// Message.TLSVersion/TLSCipher) and smtpd_tls_loglevel = 1 (MX.TLSSessions
// reads "TLS connection established" from the log). Its certificate is
// issued by the suite CA for its name (CertValid), or is self-signed,
// for WrongName, or expired; TLSOff offers no STARTTLS. TLSAMatch publishes
// _25._tcp.<mx> TLSA "3 1 1" of its key, TLSAMismatch that of another key.
// An MX relays nothing and sends no mail. AddHost alone makes a "down"
// host: nothing listens, connections are refused at once.
//
// # Certificates, MTA-STS and TLS-RPT
//
// New makes a CA (ECDSA P-256); Net.CAFile is its PEM, which the sender
// must trust. nginx serves each AddMTASTS policy at
// https://mta-sts.<domain>/.well-known/mta-sts.txt (text/plain, CRLF
// lines) with a suite-CA certificate for mta-sts.<domain> (SNI; any other
// name gets a certificate for web.nic.test), and the _mta-sts TXT record
// is published. The TLS-RPT HTTPS endpoint is a net/http server in this
// test process whose listening socket was opened inside mfwnet-report
// (Host.Listen: a locked OS thread enters the namespace with setns, opens
// the socket and returns), so POSTed reports can be read back
// (ReportServer.Reports, gzip bodies decoded). mailto: reports go to a
// Postfix MX (Standard: tlsrpt@report.test at mx.report.test).
//
// # Running
//
// As root, after e2e/internet/install-deps.sh (knot, knot-dnsutils,
// unbound, nginx-light, postfix, swaks, …):
//
//	go test -count=1 -tags e2e ./e2e/internet/
//
// builds Standard (about 2 s) and checks it with kdig, posttls-finger,
// curl and swaks (about 5 s in all). In a test: s := internet.Standard(t),
// then point the sender's DNS at s.Resolver() and its trusted CAs at
// s.CAFile(), send to s.DANE.Rcpt etc., and read s.DANE.MX.Messages().
// Or build your own: n := internet.New(t, nil); n.AddZone; n.AddMX;
// n.AddMXRecord; n.AddMTASTS; n.AddRecord; n.Start().
//
// # Cleanup
//
// Only one Internet runs on a machine at a time: New takes an exclusive
// flock on /run/lock/mfwnet.lock (waiting up to 10 minutes for another
// run), then removes every leftover of an earlier run: it kills every
// process in an mfwnet-* namespace (Postfix daemonizes, so this is how
// it is stopped), deletes the namespaces, the mfwnet-* links,
// /etc/netns/mfwnet-* and the run directories (/tmp/mfwnet-*) it made.
// The same is done by t.Cleanup when the test ends. knot, unbound and
// nginx run in the foreground with a parent-death signal, so they die with
// the test process even when it is killed; what else a killed run leaves
// (Postfix, namespaces) goes at the next New. Cleanup can also be called
// on its own. Other names (mfwe2e-* belong to another suite) are never
// touched. With MFWNET_KEEP=1 (or Options.Keep) everything but the
// TLS-RPT server is left running for inspection, until the next New.
package internet
