package directory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"

	"mailfwd/routing"
)

// Replica is a copy in memory of the directory entries that routing reads,
// kept current by the directory itself (RFC 4533 content synchronisation:
// OpenLDAP's syncprov, 389-DS's Content Synchronization plugin; see
// replica_sync.go), so that RCPT lookups cost no LDAP round trip whatever
// the recipient mix. The freshness contract (docs/directory.md):
//
//   - while the sync stream is up and its refresh is done, every answer
//     comes from the replica, and a change reaches it as fast as the server
//     pushes it (well under a second);
//   - while it is down (no plugin, connection lost, a resync running),
//     lookups go to the live source (the LDAP source behind the answer
//     cache, today's TTLs); the replica is not trusted for "not found";
//   - when the live source is unavailable too, an address the replica
//     holds is answered from it if the last confirmed sync is at most
//     MaxStale old; anything else gets the live source's temporary error
//     (451), never 550.
type Replica struct {
	live     routing.Source
	filter   *replicaFilter
	schema   Schema
	maxStale time.Duration
	log      *slog.Logger
	now      func() time.Time

	store *replicaStore

	synced    atomic.Bool  // refresh done and the stream up
	confirmed atomic.Int64 // unix nanos: the stream was last known current
	loaded    atomic.Bool  // a refresh completed once: the replica is whole
	server    atomic.Pointer[string]
	state     atomic.Pointer[string] // for logs, metrics, lookup -v

	// onDown runs when the stream stops being current (the live source's
	// cache is flushed: it may hold answers older than the replica).
	onDown func()

	local, liveN, stale atomic.Uint64 // answers by origin

	sync *replicaSync // nil for a replica fed by tests

	// table is set for a replica of a Postfix ldap_table: answers are
	// gathered as tableLookup does (replica_table.go), src gives its limits.
	table      *compiledTable
	src        *LDAPSource
	followBase *ldap.DN // the search base, when DNs are followed in the replica
}

// ReplicaStats are the replica's counters and state.
type ReplicaStats struct {
	State                      string // "synced", "refreshing", "down: …", "unsupported: …"
	Server                     string
	Entries                    int
	Lag                        time.Duration // since the stream was last confirmed current
	Local, Live, Stale         uint64        // answers from the replica, from live queries, from the replica during an outage
	Refreshes, Resyncs, Errors uint64
}

// newReplica makes an empty replica in front of live. filter is the
// configured query filter, which must compile (compileReplicaFilter);
// schema's result attributes are kept besides the filter's, and extra
// ones (a Postfix table's).
func newReplica(live routing.Source, filter string, schema Schema, extra []string, maxStale time.Duration, log *slog.Logger) (*Replica, error) {
	f, err := compileReplicaFilter(filter)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	attrs := f.attrs(nil)
	keep := append(append([]string(nil), schema.ResultAttributes...), extra...)
	if schema.FallbackAttribute != "" {
		keep = append(keep, schema.FallbackAttribute)
	}
	for _, a := range keep {
		if !containsFold(attrs, a) {
			attrs = append(attrs, strings.ToLower(a))
		}
	}
	if len(attrs) > maxReplicaAttrs {
		return nil, fmt.Errorf("%w: %d attributes, at most %d", errFilterNotLocal, len(attrs), maxReplicaAttrs)
	}
	keyed, _ := f.keyed()
	var indexed []string
	for _, k := range keyed {
		if !containsFold(indexed, k.attr) {
			indexed = append(indexed, k.attr)
		}
	}
	r := &Replica{live: live, filter: f, schema: schema, maxStale: maxStale, log: log, now: time.Now,
		store: newReplicaStore(attrs, indexed)}
	r.setState("starting", "")
	return r, nil
}

func (r *Replica) setState(s, server string) {
	r.state.Store(&s)
	if server != "" {
		r.server.Store(&server)
	}
}

// markSynced records that the stream is current now.
func (r *Replica) markSynced() {
	r.confirmed.Store(r.now().UnixNano())
	r.loaded.Store(true)
	if !r.synced.Swap(true) {
		r.setState("synced", "")
	}
}

// markDown records that the stream is no longer current, and why.
func (r *Replica) markDown(why string) {
	r.setState(why, "")
	if r.synced.Swap(false) && r.onDown != nil {
		r.onDown()
	}
}

// Lookup implements Source.
func (r *Replica) Lookup(ctx context.Context, key string) ([]routing.Match, error) {
	if r.synced.Load() {
		if ms, err := r.answer(key); !errors.Is(err, errNotHeld) {
			r.local.Add(1)
			return ms, err
		}
		// An entry it needs is outside what the replica holds: ask.
	}
	ms, err := r.live.Lookup(ctx, key)
	if err == nil || !errors.Is(err, routing.ErrUnavailable) || !r.loaded.Load() {
		r.liveN.Add(1)
		return ms, err
	}
	if age := r.now().Sub(time.Unix(0, r.confirmed.Load())); age <= r.maxStale {
		r.stale.Add(1)
		if ms, lerr := r.answer(key); lerr == nil && len(ms) > 0 {
			return ms, nil
		}
		return nil, fmt.Errorf("%w (%w)", routing.ErrReplicaMiss, err)
	}
	r.liveN.Add(1)
	return nil, err
}

// answer is the replica's own answer for key: errNotHeld when it would
// need an entry it does not hold.
func (r *Replica) answer(key string) ([]routing.Match, error) {
	if r.table != nil {
		return r.tableAnswer(key)
	}
	return r.store.lookup(r, key), nil
}

// source names the replica in Match.Source.
func (r *Replica) source() string {
	if sv := r.server.Load(); sv != nil {
		return "replica of " + *sv
	}
	return "replica"
}

// Stats returns the replica's state and counters.
func (r *Replica) Stats() ReplicaStats {
	st := ReplicaStats{State: *r.state.Load(), Entries: r.store.len(),
		Local: r.local.Load(), Live: r.liveN.Load(), Stale: r.stale.Load()}
	if s := r.server.Load(); s != nil {
		st.Server = *s
	}
	if c := r.confirmed.Load(); c != 0 {
		st.Lag = r.now().Sub(time.Unix(0, c))
	}
	if r.sync != nil {
		st.Refreshes, st.Resyncs, st.Errors = r.sync.refreshes.Load(), r.sync.resyncs.Load(), r.sync.errors.Load()
	}
	return st
}

// Synced tells whether answers come from the replica now.
func (r *Replica) Synced() bool { return r.synced.Load() }

// maxReplicaAttrs bounds the attributes an entry keeps (ends is an array).
const maxReplicaAttrs = 8

// replicaStore holds the entries by entryUUID and indexes the attributes
// the filter selects on by their lower-cased values. Sized for a million
// entries in a few hundred MiB (docs/directory.md has the measurement):
// one allocation per entry for its values, one pointer per index slot,
// with the rare value that several entries share kept aside.
type replicaStore struct {
	attrs   []string // lower-cased, the order of replEntry.ends
	indexed []int    // positions in attrs of the indexed attributes

	mu     sync.RWMutex
	byUUID map[[16]byte]*replEntry
	index  []map[string]*replEntry // per indexed attribute
	shared map[sharedKey][]*replEntry
	byDN   map[[16]byte]*replEntry // by dnKey, only for tables that follow DNs
}

type sharedKey struct {
	attr int
	val  string
}

// replEntry is one directory entry: its DN and the values of the
// replica's attributes, attribute i being vals[ends[i-1]:ends[i]].
type replEntry struct {
	dn   string
	vals []string
	ends [maxReplicaAttrs]uint16
}

func (e *replEntry) values(i int) []string {
	start := uint16(0)
	if i > 0 {
		start = e.ends[i-1]
	}
	return e.vals[start:e.ends[i]]
}

func newReplicaStore(attrs, indexed []string) *replicaStore {
	s := &replicaStore{attrs: attrs, byUUID: map[[16]byte]*replEntry{}, shared: map[sharedKey][]*replEntry{}}
	for _, a := range indexed {
		for i, b := range attrs {
			if strings.EqualFold(a, b) {
				s.indexed = append(s.indexed, i)
				s.index = append(s.index, map[string]*replEntry{})
			}
		}
	}
	return s
}

func (s *replicaStore) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.byUUID)
}

// makeEntry copies the replica's attributes out of an entry's attribute
// getter (which matches names case-insensitively).
func (s *replicaStore) makeEntry(dn string, get func(string) []string) *replEntry {
	e := &replEntry{dn: dn}
	n := 0
	lists := make([][]string, len(s.attrs))
	for i, a := range s.attrs {
		lists[i] = get(a)
		n += len(lists[i])
	}
	e.vals = make([]string, 0, n)
	for i := range s.attrs {
		e.vals = append(e.vals, lists[i]...)
		e.ends[i] = uint16(len(e.vals))
	}
	return e
}

// put adds or replaces the entry with uuid.
func (s *replicaStore) put(uuid [16]byte, e *replEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.byUUID[uuid]; old != nil {
		s.unindex(old)
	}
	s.byUUID[uuid] = e
	s.indexEntry(e)
}

// withDN is the entry named dn, or nil.
func (s *replicaStore) withDN(dn string) *replEntry {
	return s.byDN[dnKey(dn)]
}

// remove drops the entry with uuid, if held.
func (s *replicaStore) remove(uuid [16]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.byUUID[uuid]; old != nil {
		s.unindex(old)
		delete(s.byUUID, uuid)
	}
}

// keep drops every entry whose uuid is not in present (the end of a
// present phase, or of a full reload), returning how many went.
func (s *replicaStore) keep(present map[[16]byte]bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for u, e := range s.byUUID {
		if !present[u] {
			s.unindex(e)
			delete(s.byUUID, u)
			n++
		}
	}
	return n
}

// eachIndexSlot calls f once per index slot e occupies: each distinct
// lower-cased value of each indexed attribute.
func (s *replicaStore) eachIndexSlot(e *replEntry, f func(idx map[string]*replEntry, key sharedKey)) {
	for j, ai := range s.indexed {
		vals := e.values(ai)
		for k, v := range vals {
			lv := strings.ToLower(v)
			if !dupInEntry(vals[:k], lv) {
				f(s.index[j], sharedKey{j, lv})
			}
		}
	}
}

func (s *replicaStore) indexEntry(e *replEntry) {
	if s.byDN != nil {
		s.byDN[dnKey(e.dn)] = e
	}
	s.eachIndexSlot(e, func(idx map[string]*replEntry, key sharedKey) {
		if list, ok := s.shared[key]; ok {
			s.shared[key] = append(list, e)
		} else if other := idx[key.val]; other != nil {
			delete(idx, key.val)
			s.shared[key] = []*replEntry{other, e}
		} else {
			idx[key.val] = e
		}
	})
}

func (s *replicaStore) unindex(e *replEntry) {
	if s.byDN != nil {
		if k := dnKey(e.dn); s.byDN[k] == e {
			delete(s.byDN, k)
		}
	}
	s.eachIndexSlot(e, func(idx map[string]*replEntry, key sharedKey) {
		list, ok := s.shared[key]
		if !ok {
			if idx[key.val] == e {
				delete(idx, key.val)
			}
			return
		}
		out := list[:0]
		for _, x := range list {
			if x != e {
				out = append(out, x)
			}
		}
		switch len(out) {
		case 0:
			delete(s.shared, key)
		case 1:
			delete(s.shared, key)
			idx[key.val] = out[0]
		default:
			s.shared[key] = out
		}
	})
}

func dupInEntry(earlier []string, lv string) bool {
	for _, v := range earlier {
		if strings.EqualFold(v, lv) {
			return true
		}
	}
	return false
}

// lookup answers key as the live LDAP search would: the entries the
// filter matches (in DN order), each through the schema's result rules.
func (s *replicaStore) lookup(r *Replica, key string) []routing.Match {
	s.mu.RLock()
	defer s.mu.RUnlock()
	source := r.source()
	var out []routing.Match
	for _, e := range s.matching(r.filter, key) {
		out = append(out, r.schema.results(source, e.dn, s.getter(e))...)
	}
	return out
}

// getter reads e's attributes by name (case-insensitively).
func (s *replicaStore) getter(e *replEntry) func(string) []string {
	return func(name string) []string {
		for i, a := range s.attrs {
			if strings.EqualFold(a, name) {
				return e.values(i)
			}
		}
		return nil
	}
}

// matching lists the entries f matches for key, in DN order: the
// candidates from the index, each checked against the whole filter.
// s.mu must be held.
func (s *replicaStore) matching(f *replicaFilter, key string) []*replEntry {
	keyed, _ := f.keyed()
	var cands []*replEntry
	for _, k := range keyed {
		j := -1
		for jj, ai := range s.indexed {
			if s.attrs[ai] == k.attr {
				j = jj
			}
		}
		v := strings.ToLower(k.expand(key))
		if e := s.index[j][v]; e != nil {
			cands = appendNew(cands, e)
		}
		for _, e := range s.shared[sharedKey{j, v}] {
			cands = appendNew(cands, e)
		}
	}
	if len(cands) > 1 {
		sort.Slice(cands, func(a, b int) bool { return cands[a].dn < cands[b].dn })
	}
	out := cands[:0]
	for _, e := range cands {
		if f.match(key, s.getter(e)) {
			out = append(out, e)
		}
	}
	return out
}

func appendNew(list []*replEntry, e *replEntry) []*replEntry {
	for _, x := range list {
		if x == e {
			return list
		}
	}
	return append(list, e)
}
