package directory

import (
	"context"
	"crypto/md5"
	"fmt"
	"strings"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// The replica's fallback feed where content synchronisation is refused
// (389-DS without its Content Synchronization plugin): a persistent search
// (draft-ietf-ldapext-psearch, built into 389-DS) for the changes, begun
// before a full paged search that loads the entries, keyed by their
// normalised DN (a rename's notification names the previous DN; the
// lookup user need not read nsUniqueId). It has no cookie: every reconnect reloads in full (the
// entries not found again are dropped). The persistent search is known
// to be registered when a WhoAmI sent after it on the same connection is
// answered; a change in the moment between its dispatch and registration
// could be missed, which content synchronisation does not allow: prefer
// the plugin.

const (
	oidPersistentSearch = "2.16.840.1.113730.3.4.3"
	oidEntryChange      = "2.16.840.1.113730.3.4.7"
)

// persistentSearchControl asks for every change type (add 1, delete 2,
// modify 4, modDN 8), changes only, with entry change notifications.
func persistentSearchControl() ldap.Control {
	v := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "PersistentSearch")
	v.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, 15, "changeTypes"))
	v.AppendChild(ber.NewBoolean(ber.ClassUniversal, ber.TypePrimitive, ber.TagBoolean, true, "changesOnly"))
	v.AppendChild(ber.NewBoolean(ber.ClassUniversal, ber.TypePrimitive, ber.TagBoolean, true, "returnECs"))
	return &ldap.ControlString{ControlType: oidPersistentSearch, Criticality: true, ControlValue: string(v.Bytes())}
}

// entryChange is an entry's EntryChangeNotification: the change type
// (add 1, delete 2, modify 4, modDN 8; 0 without one) and, for a rename,
// the previous DN.
func entryChange(ctls []ldap.Control) (kind int64, previousDN string) {
	for _, c := range ctls {
		cs, ok := c.(*ldap.ControlString)
		if !ok || cs.ControlType != oidEntryChange {
			continue
		}
		p, err := ber.DecodePacketErr([]byte(cs.ControlValue))
		if err != nil || len(p.Children) == 0 {
			return 0, ""
		}
		kind, _ = p.Children[0].Value.(int64)
		if len(p.Children) > 1 && p.Children[1].Tag == ber.TagOctetString {
			previousDN = p.Children[1].Data.String()
		}
		return kind, previousDN
	}
	return 0, ""
}

// dnKey identifies an entry by its DN, compared as the server would
// (case and spacing after commas do not matter).
func dnKey(dn string) [16]byte {
	if parsed, err := ldap.ParseDN(dn); err == nil {
		var parts []string
		for _, rdn := range parsed.RDNs {
			for _, a := range rdn.Attributes {
				parts = append(parts, strings.ToLower(a.Type)+"="+strings.ToLower(a.Value))
			}
		}
		dn = strings.Join(parts, ",")
	} else {
		dn = strings.ToLower(dn)
	}
	return md5.Sum([]byte(dn))
}

// psearchSession loads the entries and follows a persistent search on url
// until it fails.
func (y *replicaSync) psearchSession(ctx context.Context, url string) error {
	c, err := y.src.dial(url)
	if err != nil {
		return err
	}
	defer c.Close()
	if ok, err := supportsControl(c, oidPersistentSearch); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("%w: no persistent search either (supportedControl)", errSyncUnsupported)
	}
	c.SetTimeout(0)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	attrs := y.r.store.attrs
	filter := y.syncFilter()
	y.r.setState("refreshing (persistent search)", url)
	y.refreshes.Add(1)
	began := time.Now()
	req := ldap.NewSearchRequest(y.src.cfg.Base, y.src.scope, y.src.cfg.Deref, 0, 0, false, filter, attrs,
		[]ldap.Control{persistentSearchControl()})
	resp := c.SearchAsync(sctx, req, 4096)
	if _, err := c.WhoAmI(nil); err != nil { // the persistent search is registered
		return err
	}

	// The full load, on a connection of its own, paged.
	lc, err := y.src.dial(url)
	if err != nil {
		return err
	}
	lc.SetTimeout(10 * y.src.cfg.Timeout)
	res, err := lc.SearchWithPaging(ldap.NewSearchRequest(y.src.cfg.Base, y.src.scope, y.src.cfg.Deref, 0, 0, false, filter, attrs, nil), 1000)
	lc.Close()
	if err != nil {
		return fmt.Errorf("full load: %w", err)
	}
	present := map[[16]byte]bool{}
	for _, e := range res.Entries {
		id := dnKey(e.DN)
		y.r.store.put(id, y.r.store.makeEntry(e.DN, e.GetEqualFoldAttributeValues))
		present[id] = true
	}
	removed := y.r.store.keep(present)
	y.src.log.Info("directory replica in sync (persistent search)", "url", url, "entries", y.r.store.len(),
		"removed", removed, "full", true, "took", time.Since(began).Round(time.Millisecond))

	probeFailed := make(chan error, 1)
	go y.probe(sctx, c, url, probeFailed, func() error { return nil })
	y.r.markSynced()
	y.r.setState("synced", url)
	for resp.Next() {
		e := resp.Entry()
		if e == nil {
			continue
		}
		kind, previous := entryChange(resp.Controls())
		if previous != "" {
			y.r.store.remove(dnKey(previous))
		}
		if kind == 2 {
			y.r.store.remove(dnKey(e.DN))
		} else {
			y.r.store.put(dnKey(e.DN), y.r.store.makeEntry(e.DN, e.GetEqualFoldAttributeValues))
		}
		y.r.markSynced()
	}
	return streamEnd(probeFailed, resp.Err(), "persistent search", ldap.LDAPResultUnavailableCriticalExtension)
}

// supportsControl reads the root DSE's supportedControl.
func supportsControl(c *ldapConn, oid string) (bool, error) {
	res, err := c.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"supportedControl"}, nil))
	if err != nil {
		return false, fmt.Errorf("root DSE: %w", err)
	}
	for _, e := range res.Entries {
		for _, v := range e.GetAttributeValues("supportedControl") {
			if v == oid {
				return true, nil
			}
		}
	}
	return false, nil
}
