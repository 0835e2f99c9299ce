package dane

import (
	"crypto/tls"
	"strings"
	"time"
)

// Config returns a copy of base (nil: an empty Config) for the STARTTLS
// handshake with a server whose secure TLSA RRset is records: Go's WebPKI
// verification off (InsecureSkipVerify), Verify's in VerifyConnection,
// which also runs on session resumption. The usable records count, the
// names are the reference identifiers (see the package doc), and the
// checks use base.Time if set. ServerName, the SNI, stays base's if set,
// else names[0] (RFC 7672 §8.1: the TLSA base domain). base's own
// VerifyConnection, if any, runs after DANE has passed; its
// VerifyPeerCertificate, if any, still runs first with no verified
// chains. Records and names are copied.
func Config(base *tls.Config, records []Record, names []string) *tls.Config {
	cfg := &tls.Config{}
	if base != nil {
		cfg = base.Clone()
	}
	if cfg.ServerName == "" && len(names) > 0 {
		cfg.ServerName = strings.TrimSuffix(names[0], ".")
	}
	cfg.InsecureSkipVerify = true
	var recs []Record
	for _, r := range Usable(records) {
		r.Data = append([]byte(nil), r.Data...)
		recs = append(recs, r)
	}
	ns := append([]string(nil), names...)
	host, clock, next := cfg.ServerName, cfg.Time, cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		var now time.Time
		if clock != nil {
			now = clock()
		}
		if err := verify(cs.PeerCertificates, recs, ns, host, now); err != nil {
			return err
		}
		if next != nil {
			return next(cs)
		}
		return nil
	}
	return cfg
}
