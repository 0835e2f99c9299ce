package directory

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"

	"mailfwd/routing"
)

// The replica's feed: one RFC 4533 refreshAndPersist search at a time, to
// the first server in the list that takes it. The refresh loads the
// entries (or, with the cookie of an earlier session to the same server,
// only what changed since); the persist phase then streams every change.
// go-ldap's Syncrepl does the protocol; this file keeps the replica whole:
// entries by entryUUID, the present phase's implicit deletes, and a full
// reload whenever there is no cookie to resume from.

// ReplicaConfig tunes a replica of an LDAP source.
type ReplicaConfig struct {
	// MaxStale is how old the last confirmed sync may be for the replica
	// to answer known addresses while the directory is unreachable.
	MaxStale time.Duration
	// Probe is how often an idle stream is checked (a WhoAmI on the sync
	// connection): a stream that stops answering is restarted.
	Probe time.Duration
	// RetryUnsupported is how soon a server that refused the sync
	// control is asked again.
	RetryUnsupported time.Duration
}

type replicaSync struct {
	r   *Replica
	src *LDAPSource
	cfg ReplicaConfig

	cookie    []byte
	cookieURL string

	refreshes, resyncs, errors atomic.Uint64
}

// NewLDAPReplica is a replica of src, in front of live (src behind its
// answer cache). It fails, and the caller keeps live alone, when src's
// filter cannot be evaluated locally (replica_filter.go, and for a
// Postfix table replica_table.go).
func NewLDAPReplica(src *LDAPSource, live routing.Source, cfg ReplicaConfig) (*Replica, error) {
	if cfg.Probe <= 0 {
		cfg.Probe = 10 * time.Second
	}
	if cfg.RetryUnsupported <= 0 {
		cfg.RetryUnsupported = 5 * time.Minute
	}
	var r *Replica
	var err error
	if src.table != nil {
		r, err = newTableReplica(src, live, cfg)
	} else {
		r, err = newReplica(live, src.cfg.Filter, src.cfg.Schema, nil, cfg.MaxStale, src.log)
	}
	if err != nil {
		return nil, err
	}
	r.sync = &replicaSync{r: r, src: src, cfg: cfg}
	return r, nil
}

// OnDown sets what runs when the replica stops being current (before the
// next lookup goes live).
func (r *Replica) OnDown(f func()) { r.onDown = f }

// Run keeps the replica in sync until ctx ends.
func (r *Replica) Run(ctx context.Context) {
	if r.sync == nil {
		return
	}
	r.sync.run(ctx)
}

// errSyncUnsupported marks a server that refuses content synchronisation.
var errSyncUnsupported = errors.New("content synchronisation not available")

func (y *replicaSync) run(ctx context.Context) {
	backoff := time.Second
	for ctx.Err() == nil {
		unsupported := 0
		for _, url := range y.src.cfg.URLs {
			start := time.Now()
			// Content sync first at every (re)connect: a plugin enabled
			// since the last session is used from the next one on.
			err := y.session(ctx, url)
			if errors.Is(err, errSyncUnsupported) {
				y.src.log.Warn("directory replica: no content synchronisation, following a persistent search instead (enable the Content Synchronization plugin: docs/directory.md)", "url", url, "err", err)
				err = y.psearchSession(ctx, url)
			}
			if ctx.Err() != nil {
				return
			}
			y.errors.Add(1)
			switch {
			case errors.Is(err, errSyncUnsupported):
				unsupported++
				y.r.markDown("unsupported: " + err.Error())
				y.src.log.Warn("directory replica: server has no content synchronisation, answering from live queries", "url", url, "err", err)
			case ldap.IsErrorWithCode(err, ldap.LDAPResultSyncRefreshRequired):
				y.resyncs.Add(1)
				y.cookie = nil
				y.r.markDown("down: full resync required by " + url)
				y.src.log.Info("directory replica: the server wants a full resync", "url", url)
			default:
				y.r.markDown("down: " + err.Error())
				y.src.log.Warn("directory replica: sync stream lost, answering from live queries", "url", url, "err", err)
			}
			if time.Since(start) > time.Minute {
				backoff = time.Second // it had been working
			}
		}
		wait := backoff
		if unsupported == len(y.src.cfg.URLs) {
			wait = y.cfg.RetryUnsupported
		} else if backoff *= 2; backoff > 30*time.Second {
			backoff = 30 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// session runs one refreshAndPersist search on url until it fails.
func (y *replicaSync) session(ctx context.Context, url string) error {
	c, err := y.src.dial(url)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetTimeout(0) // the search lasts as long as the stream
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()

	if y.cookieURL != url {
		y.cookie = nil // a cookie means something only to its server
	}
	full := y.cookie == nil
	req := ldap.NewSearchRequest(y.src.cfg.Base, y.src.scope, y.src.cfg.Deref, 0, 0, false, y.syncFilter(), y.r.store.attrs, nil)
	resp := c.Syncrepl(sctx, req, 512, ldap.SyncRequestModeRefreshAndPersist, y.cookie, false)
	y.r.setState("refreshing", url)
	y.refreshes.Add(1)
	began := time.Now()

	// A refresh that stops sending before it is done (389-DS stops at the
	// bind user's size limit, 2000 entries by default, and says nothing)
	// would leave the replica refreshing for ever: the probe ends it.
	var lastMsg, received atomic.Int64
	var inRefresh atomic.Bool
	lastMsg.Store(time.Now().UnixNano())
	inRefresh.Store(true)
	stalled := func() error {
		if idle := time.Since(time.Unix(0, lastMsg.Load())); inRefresh.Load() && idle > 3*y.cfg.Probe {
			return fmt.Errorf("%s: refresh stalled: %d entries received, then nothing for %v (a size limit for the bind user? 389-DS: nsSizeLimit: -1; OpenLDAP: limits size=unlimited)",
				url, received.Load(), idle.Round(time.Second))
		}
		return nil
	}
	probeFailed := make(chan error, 1)
	go y.probe(sctx, c, url, probeFailed, stalled)

	refreshing := true
	present := map[[16]byte]bool{}
	changed, removed := 0, 0
	setCookie := func(ck []byte) {
		if ck != nil {
			y.cookie, y.cookieURL = append([]byte(nil), ck...), url
		}
	}
	endRefresh := func(sweep bool) {
		if sweep || full {
			removed += y.r.store.keep(present)
		}
		present = map[[16]byte]bool{}
	}
	for resp.Next() {
		lastMsg.Store(time.Now().UnixNano())
		if e := resp.Entry(); e != nil {
			received.Add(1)
			st := syncState(resp.Controls())
			if st == nil {
				continue // not a sync answer (a referral entry, say)
			}
			var id [16]byte
			copy(id[:], st.EntryUUID[:])
			switch st.State {
			case ldap.SyncStateAdd, ldap.SyncStateModify:
				y.r.store.put(id, y.r.store.makeEntry(e.DN, e.GetEqualFoldAttributeValues))
				present[id] = true
				changed++
			case ldap.SyncStatePresent:
				present[id] = true
			case ldap.SyncStateDelete:
				y.r.store.remove(id)
				removed++
			}
			setCookie(st.Cookie)
		}
		for _, ctl := range resp.Controls() {
			info, ok := ctl.(*ldap.ControlSyncInfo)
			if !ok {
				continue
			}
			switch {
			case info.NewCookie != nil:
				setCookie(info.NewCookie.Cookie)
			case info.RefreshDelete != nil:
				setCookie(info.RefreshDelete.Cookie)
				if refreshing && info.RefreshDelete.RefreshDone {
					endRefresh(false)
					refreshing = false
				}
			case info.RefreshPresent != nil:
				setCookie(info.RefreshPresent.Cookie)
				endRefresh(true)
				if info.RefreshPresent.RefreshDone {
					refreshing = false
				}
			case info.SyncIdSet != nil:
				setCookie(info.SyncIdSet.Cookie)
				for _, u := range info.SyncIdSet.SyncUUIDs {
					var id [16]byte
					copy(id[:], u[:])
					if info.SyncIdSet.RefreshDeletes {
						y.r.store.remove(id)
						removed++
					} else {
						present[id] = true
					}
				}
			}
			if !refreshing && !y.r.Synced() {
				y.src.log.Info("directory replica in sync", "url", url, "entries", y.r.store.len(),
					"changed", changed, "removed", removed, "full", full, "took", time.Since(began).Round(time.Millisecond))
			}
		}
		if !refreshing {
			inRefresh.Store(false)
			y.r.markSynced()
		}
	}
	return streamEnd(probeFailed, resp.Err(), "sync search", ldap.LDAPResultUnavailableCriticalExtension,
		ldap.LDAPResultUnwillingToPerform, ldap.LDAPResultInsufficientAccessRights)
}

// streamEnd is why a sync or persistent search stream ended: what the
// probe found (it closed the connection), else the server's error (one of
// refused: the server will not do it, errSyncUnsupported), else the server
// ended the search.
func streamEnd(probeFailed <-chan error, err error, what string, refused ...uint16) error {
	select {
	case perr := <-probeFailed:
		return perr
	default:
	}
	if err == nil {
		return fmt.Errorf("the server ended the %s", what)
	}
	for _, code := range refused {
		if ldap.IsErrorWithCode(err, code) {
			return fmt.Errorf("%w (%s refused): %w", errSyncUnsupported, what, err)
		}
	}
	return err
}

// syncFilter selects the entries the replica needs: those with one of the
// attributes the query filter matches the address against, or every entry
// when DNs are followed in it (a group's members need not have them).
func (y *replicaSync) syncFilter() string {
	if y.r.store.byDN != nil {
		return "(objectClass=*)"
	}
	var presence []string
	for _, i := range y.r.store.indexed {
		presence = append(presence, "("+y.r.store.attrs[i]+"=*)")
	}
	return "(|" + strings.Join(presence, "") + ")"
}

// probe checks the stream every cfg.Probe with a WhoAmI on its connection;
// an answer confirms the replica current (the server answers in order on
// one connection, after the changes it sent before), no answer in time
// closes the connection, which ends the session.
func (y *replicaSync) probe(ctx context.Context, c *ldapConn, url string, failed chan<- error, stalled func() error) {
	t := time.NewTicker(y.cfg.Probe)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := stalled(); err != nil {
			failed <- err
			c.Close()
			return
		}
		done := make(chan error, 1)
		go func() {
			_, err := c.WhoAmI(nil)
			done <- err
		}()
		var err error
		select {
		case <-ctx.Done():
			return
		case err = <-done:
		case <-time.After(y.src.cfg.Timeout):
			err = fmt.Errorf("no answer to a WhoAmI in %v", y.src.cfg.Timeout)
		}
		if err != nil {
			failed <- fmt.Errorf("%s: sync connection check: %w", url, err)
			c.Close()
			return
		}
		if y.r.Synced() {
			y.r.confirmed.Store(y.r.now().UnixNano())
		}
	}
}

func syncState(ctls []ldap.Control) *ldap.ControlSyncState {
	for _, c := range ctls {
		if s, ok := c.(*ldap.ControlSyncState); ok {
			return s
		}
	}
	return nil
}
