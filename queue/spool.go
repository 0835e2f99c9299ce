package queue

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"mailfwd/queue/envelope"

	"golang.org/x/sys/unix"
)

// ErrSpoolLocked: another process (a running mailfwd) has the spool open.
var ErrSpoolLocked = errors.New("spool is in use by another mailfwd process")

// ErrSpoolFull marks a message that could not be written for lack of space
// or permission: temporary for the client (452 4.3.1), never half-accepted.
var ErrSpoolFull = errors.New("spool cannot store the message")

// A message is one queue file, ID.msg: the body as received, then its
// envelope (JSON), then a fixed-size footer giving the envelope's length.
// One file per message, as Postfix has, because creating and deleting
// inodes is much of a small message's cost. Envelope changes after the
// commit (delivery state, next attempt) go to ID.env, which then takes
// precedence over the one in the queue file; its modification time is the
// message's next attempt, so a restart learns when each message is due
// from the directory alone (Postfix does the same with its deferred
// queue files), without reading any envelope.
//
// Files are spread over 256 subdirectories named by the last two hex
// digits of the ID (random ones: Postfix's hash_queue_depth idea), so that
// no directory grows huge with a backlog: ext4 never shrinks a directory,
// and listing, recovery and lookups stay fast at any backlog. Spools of
// earlier layouts (one flat directory; ID.body + ID.env) are converted
// when opened.
const (
	msgSuffix  = ".msg"
	envSuffix  = ".env"
	tmpSuffix  = ".tmp"
	bodySuffix = ".body" // earlier format: converted by recover

	footerPrefix = "\nmailfwd-envelope "
	footerLen    = len(footerPrefix) + 16 + 1 // prefix, %016x length, "\n"
)

// Spool is the on-disk queue directory. A commit is an fdatasync of the
// queue file, a rename and a directory fsync shared by concurrent commits.
type Spool struct {
	// MinFree is the free-space reserve new mail may not take (Room).
	MinFree int64

	dir      string
	log      *slog.Logger
	syncer   *dirSyncer
	readOnly bool // ReadSpool: never moves a file
	// dataSync makes a file's data durable through its own descriptor
	// (fdatasync; a hook for tests).
	dataSync  func(*os.File) error
	corrupt   string
	mu        sync.Mutex
	recovered []Queued
	unlock    func()
}

// Queued is a message found in the spool when it was opened: its ID, and
// whether it was ever updated (then its due time is its envelope file's
// modification time; else it is due at once).
type Queued struct {
	ID      string
	Updated bool
}

// OpenSpool creates dir if needed, cleans up after a crash and indexes
// the queued messages (see recover), and starts its directory syncer.
// Recovery runs here, before the spool can accept anything, because it
// deletes temp files: run later it would delete the files of messages
// being received. It reads directory entries only, so it takes a moment
// even with a large backlog; each envelope is checked when the scheduler
// first loads it (Spool.LoadQueued).
func OpenSpool(dir string, log *slog.Logger) (*Spool, error) {
	if log == nil {
		log = slog.Default()
	}
	msgDir := filepath.Join(dir, "msg")
	if err := os.MkdirAll(msgDir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &Spool{dir: msgDir, log: log, corrupt: filepath.Join(dir, "corrupt"), dataSync: fdatasync}
	// The lock comes first: recovery deletes temp files, which must never
	// happen under a process that is writing them.
	unlock, err := s.Lock()
	if err != nil {
		return nil, fmt.Errorf("%w (%s): %v", ErrSpoolLocked, dir, err)
	}
	s.unlock = unlock
	for i := range 256 {
		if err := os.Mkdir(filepath.Join(msgDir, fmt.Sprintf("%02X", i)), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			unlock()
			return nil, fmt.Errorf("spool: %w", err)
		}
	}
	if s.syncer, err = newDirSyncer(msgDir); err != nil {
		unlock()
		return nil, fmt.Errorf("spool: %w", err)
	}
	if s.recovered, err = s.recover(); err != nil {
		s.Close()
		return nil, fmt.Errorf("spool: %w", err)
	}
	return s, nil
}

// Room reports whether a message of size bytes (0: not declared) may be
// accepted: the filesystem keeps MinFree bytes free beside it (Postfix's
// queue_minfree), for delivery to go on when new mail cannot come in.
func (s *Spool) Room(size int64) error {
	if s.MinFree <= 0 {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.dir, &st); err != nil {
		return classify(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < s.MinFree+size {
		return fmt.Errorf("%w: %d bytes free, the reserve is %d (message: %d)", ErrSpoolFull, free, s.MinFree, size)
	}
	return nil
}

// ReadSpool gives read-only access (List, Walk, Load, OpenBody) to a spool
// that a running daemon may be writing: files only ever appear by rename,
// so a reader sees whole files.
func ReadSpool(dir string) *Spool {
	return &Spool{dir: filepath.Join(dir, "msg"), log: slog.Default(), readOnly: true, corrupt: filepath.Join(dir, "corrupt")}
}

// TakeRecovered returns, once, the messages found in the spool when it was
// opened, oldest first: the scheduler's starting work.
func (s *Spool) TakeRecovered() []Queued {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.recovered
	s.recovered = nil
	return r
}

// DueTime is when a message recovered with Updated is due: the
// modification time of its envelope file (Update sets it to the next
// attempt). Zero when it cannot be told: due at once.
func (s *Spool) DueTime(id string) time.Time {
	st, err := os.Stat(s.path(id, envSuffix))
	if err != nil {
		return time.Time{}
	}
	return st.ModTime()
}

// Close stops the directory syncer and releases the lock.
func (s *Spool) Close() error {
	var err error
	if s.syncer != nil {
		err = s.syncer.close()
	}
	if s.unlock != nil {
		s.unlock()
		s.unlock = nil
	}
	return err
}

// Dir is where message files live (in subdirectories).
func (s *Spool) Dir() string { return s.dir }

// NewID returns a queue ID: time-ordered hex, unique across restarts.
func NewID() string {
	var r [3]byte
	rand.Read(r[:])
	return fmt.Sprintf("%013X%s", time.Now().UnixMicro(), strings.ToUpper(hex.EncodeToString(r[:])))
}

// Writer streams one message body to disk. Nothing is visible to the
// scheduler until Commit returns.
type Writer struct {
	s    *Spool
	id   string
	f    *os.File
	bw   *bufio.Writer
	n    int64
	crc  uint32
	done bool
}

// Create starts a new message.
func (s *Spool) Create() (*Writer, error) {
	id := NewID()
	f, err := os.OpenFile(s.path(id, tmpSuffix), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, classify(err)
	}
	return &Writer{s: s, id: id, f: f, bw: bufio.NewWriterSize(f, 64<<10)}, nil
}

// ID is the queue ID of the message being written.
func (w *Writer) ID() string { return w.id }

// Size is the number of body bytes written so far.
func (w *Writer) Size() int64 { return w.n }

func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.bw.Write(p)
	w.n += int64(n)
	w.crc = crc32.Update(w.crc, castagnoli, p[:n])
	if err != nil {
		return n, classify(err)
	}
	return n, nil
}

// Commit makes the message durable: the envelope (with the body's
// CRC-32C) and footer are appended to the body, the file is fdatasynced
// through its own descriptor (so a writeback error of its pages is
// reported to this commit, not to whichever sync runs first), renamed
// into place, and its directory fsynced: one directory fsync per
// subdirectory, shared with every commit that renamed before it began
// (group commit). Only when Commit returns nil may the client be told 250.
//
// When a sync fails the file is removed before the error returns: the
// client gets a 4xx and sends again, and no copy of this attempt may be
// delivered beside its retry.
func (w *Writer) Commit(env *envelope.Envelope) error {
	if w.done {
		return errors.New("spool: message already committed or aborted")
	}
	env.ID = w.id
	env.Size = w.n
	env.BodyCRC, env.HasCRC = w.crc, true
	if env.Received.IsZero() {
		env.Received = time.Now()
	}
	b, err := env.Marshal()
	if err != nil {
		w.Abort()
		return err
	}
	w.bw.Write(b)
	fmt.Fprintf(w.bw, "%s%016x\n", footerPrefix, len(b))
	err = w.bw.Flush()
	if err == nil {
		err = w.s.dataSync(w.f)
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.done = true
	s := w.s
	tmp, final := s.path(w.id, tmpSuffix), s.path(w.id, msgSuffix)
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		os.Remove(tmp)
		return classify(err)
	}
	if err := s.syncer.sync(filepath.Dir(final)); err != nil {
		// The rename may be durable, or become so: remove the file, and
		// sync that if we can, so that a restart does not deliver it.
		os.Remove(final)
		s.syncer.sync(filepath.Dir(final))
		return classify(err)
	}
	return nil
}

// Queue commits msg as a message of our own from from to one recipient,
// due at once (a TLS report: Scheduler.Inject; `mailfwd tls-report -send`
// with the relay stopped, which delivers it when it starts).
func (s *Spool) Queue(from, to string, external bool, msg []byte, now time.Time) (*envelope.Envelope, error) {
	w, err := s.Create()
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(msg); err != nil {
		w.Abort()
		return nil, err
	}
	env := &envelope.Envelope{From: from, Received: now, NextAttempt: now,
		Recipients: []envelope.Recipient{{Addr: to, Status: envelope.Pending, Forward: external, DSNNotify: "NEVER"}}}
	if err := w.Commit(env); err != nil {
		return nil, err
	}
	return env, nil
}

// Abort discards an uncommitted message.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.s.path(w.id, tmpSuffix))
}

// hashDir is the subdirectory of a message: the last two characters of
// its ID (random hex digits in IDs from NewID).
func hashDir(id string) string {
	if len(id) < 2 {
		return "00"
	}
	return strings.ToUpper(id[len(id)-2:])
}

func (s *Spool) path(id, suffix string) string {
	return filepath.Join(s.dir, hashDir(id), id+suffix)
}

// validID: a queue ID as an administrator may type it, never a path.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

// Update durably replaces a message's envelope (recipient states, next
// attempt time) with ID.env, which then takes precedence over the one in
// the queue file, and whose modification time is the next attempt. The
// new file is fsynced before it replaces the old one, so a crash leaves
// one of the two whole, never an empty envelope.
func (s *Spool) Update(env *envelope.Envelope) error {
	b, err := env.Marshal()
	if err != nil {
		return err
	}
	// A name of its own: two updates of one message at once must not
	// write into the same temp file (the last rename wins, whole).
	var r [4]byte
	rand.Read(r[:])
	tmp := s.path(env.ID, envSuffix+"."+hex.EncodeToString(r[:])+tmpSuffix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return classify(err)
	}
	_, err = f.Write(b)
	if err == nil && !env.NextAttempt.IsZero() {
		// the due time, for a restart to read without the envelope
		err = os.Chtimes(tmp, time.Now(), env.NextAttempt)
	}
	if err == nil {
		err = s.dataSync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return classify(err)
	}
	final := s.path(env.ID, envSuffix)
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return classify(err)
	}
	return classify(s.syncer.sync(filepath.Dir(final)))
}

// Remove deletes a finished message: the queue file first, so a crash in
// between leaves an orphan ID.env that recovery removes, never a message
// with an older envelope. It does not wait for a sync: an unlink lost to a
// power cut only makes the just-delivered message go out once more, and
// Postfix does not sync its removals either.
func (s *Spool) Remove(id string) error {
	if err := os.Remove(s.path(id, msgSuffix)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Remove(s.path(id, envSuffix)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Body is a committed message's body: the first env.Size bytes of its
// queue file.
type Body struct {
	*io.SectionReader
	f *os.File
}

func (b *Body) Close() error { return b.f.Close() }

// OpenBody opens a committed message's body for reading.
func (s *Spool) OpenBody(env *envelope.Envelope) (*Body, error) {
	f, err := os.Open(s.path(env.ID, msgSuffix))
	if err != nil {
		return nil, err
	}
	return &Body{io.NewSectionReader(f, 0, env.Size), f}, nil
}

// Load reads one envelope: ID.env if the message was updated since its
// commit, else the one in its queue file.
func (s *Spool) Load(id string) (*envelope.Envelope, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%w: %q", ErrNoMessage, id)
	}
	b, err := os.ReadFile(s.path(id, envSuffix))
	if err == nil {
		env, perr := envelope.Unmarshal(b)
		if perr == nil && env.ID == id {
			return env, nil
		}
		// Empty or unreadable (a lost write): the envelope committed with
		// the queue file is whole, if older. Delivering from it may repeat
		// a delivery; losing the message would be worse.
		fallback, ferr := s.loadQueueFile(id)
		if ferr != nil {
			return nil, fmt.Errorf("envelope file unreadable (%v), and so is the queue file's: %w", perr, ferr)
		}
		if !s.readOnly {
			s.log.Error("spool: envelope file unreadable; using the envelope of the queue file (recipients delivered since may get a copy again)",
				"queue_id", id, "err", perr, "size", len(b))
			s.setAside(id, envSuffix)
		}
		return fallback, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return s.loadQueueFile(id)
}

// errNoFooter: a queue file without a valid footer, that is, a commit cut
// short by a crash before its sync (no 250 was given for it).
var errNoFooter = errors.New("queue file incomplete: no valid envelope footer")

// loadQueueFile reads the envelope stored in ID.msg and checks that the
// body before it has the size the envelope records.
func (s *Spool) loadQueueFile(id string) (*envelope.Envelope, error) {
	f, err := os.Open(s.path(id, msgSuffix))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size < int64(footerLen) {
		return nil, errNoFooter
	}
	foot := make([]byte, footerLen)
	if _, err := f.ReadAt(foot, size-int64(footerLen)); err != nil {
		return nil, err
	}
	hexLen, ok := strings.CutPrefix(string(foot), footerPrefix)
	n, perr := strconv.ParseInt(strings.TrimSuffix(hexLen, "\n"), 16, 64)
	if !ok || !strings.HasSuffix(hexLen, "\n") || perr != nil || n <= 0 || n > size-int64(footerLen) {
		return nil, errNoFooter
	}
	b := make([]byte, n)
	if _, err := f.ReadAt(b, size-int64(footerLen)-n); err != nil {
		return nil, err
	}
	env, err := envelope.Unmarshal(b)
	if err != nil {
		return nil, err
	}
	if env.ID != id || env.Size != size-int64(footerLen)-n {
		return nil, fmt.Errorf("queue file %s: envelope of %q for a body of %d bytes", id, env.ID, size-int64(footerLen)-n)
	}
	return env, nil
}

// List returns every committed message, oldest first, changing nothing.
func (s *Spool) List() ([]*envelope.Envelope, error) {
	var out []*envelope.Envelope
	err := s.Walk(func(env *envelope.Envelope) error {
		out = append(out, env)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, err
}

// Walk calls fn with each committed message's envelope, one subdirectory
// at a time (memory does not grow with the backlog), changing nothing; it
// stops at fn's first error. Messages whose envelope cannot be read are
// skipped.
func (s *Spool) Walk(fn func(*envelope.Envelope) error) error {
	subs, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, sub := range subs {
		if !sub.IsDir() {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(s.dir, sub.Name()))
		if err != nil {
			continue // removed or unreadable: nothing to list
		}
		for _, e := range ents {
			if id, ok := strings.CutSuffix(e.Name(), msgSuffix); ok {
				if env, err := s.Load(id); err == nil {
					if err := fn(env); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// ErrGone: a message found at recovery was not whole (a queue file
// without a valid footer, a body shorter than recorded or whose checksum
// does not match, no readable envelope) and was quarantined.
var ErrGone = errors.New("queue file quarantined at recovery")

// LoadQueued reads a recovered message's envelope for delivery, finishing
// the crash checks that recovery left to the first read. Every queue file
// was synced before it got its name, so one that is not whole is damage
// (or a commit of an earlier version cut short): it is moved to the
// quarantine with a loud log line, never deleted and never delivered.
func (s *Spool) LoadQueued(id string) (*envelope.Envelope, error) {
	env, err := s.Load(id)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, err
	case err != nil:
		s.log.Error("spool: queue file not whole, quarantined (mailfwd queue quarantine lists it)", "queue_id", id, "err", err)
		s.quarantine(id)
		return nil, ErrGone
	}
	if err := s.checkBody(env); err != nil {
		s.log.Error("spool: body damaged, quarantined (mailfwd queue quarantine lists it)", "queue_id", id, "err", err)
		s.quarantine(id)
		return nil, ErrGone
	}
	return env, nil
}

// checkBody verifies that the queue file holds the body the envelope
// describes: its size, and its CRC-32C when the envelope has one.
func (s *Spool) checkBody(env *envelope.Envelope) error {
	f, err := os.Open(s.path(env.ID, msgSuffix))
	if err != nil {
		return err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return err
	} else if st.Size() < env.Size {
		return fmt.Errorf("body shorter (%d bytes) than recorded (%d)", st.Size(), env.Size)
	}
	if !env.HasCRC {
		return nil
	}
	h := crc32.New(castagnoli)
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, env.Size)); err != nil {
		return err
	}
	if got := h.Sum32(); got != env.BodyCRC {
		return fmt.Errorf("body checksum %08x, recorded %08x", got, env.BodyCRC)
	}
	return nil
}

// recover indexes the queued messages, oldest first, after cleaning up
// what a crash can leave that needs no reading: temp files, envelopes
// whose queue file is gone (a removal cut short). Files of earlier layouts
// are moved into their subdirectories, and messages of the earlier
// two-file format converted in place: the body becomes the queue file, and
// its ID.env stays the envelope. What needs the envelope read is left to
// LoadQueued.
func (s *Spool) recover() ([]Queued, error) {
	moved, err := s.rehash()
	if err != nil {
		return nil, err
	}
	var out []Queued
	subs, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	for _, sub := range subs {
		if !sub.IsDir() {
			continue
		}
		d := filepath.Join(s.dir, sub.Name())
		ents, err := os.ReadDir(d)
		if err != nil {
			return nil, err
		}
		msgs, envs, bodies := map[string]bool{}, map[string]bool{}, map[string]bool{}
		for _, e := range ents {
			name := e.Name()
			switch {
			case strings.HasSuffix(name, tmpSuffix):
				s.log.Info("spool: removing partial file from an interrupted write", "file", name)
				os.Remove(filepath.Join(d, name))
			case strings.HasSuffix(name, msgSuffix):
				msgs[strings.TrimSuffix(name, msgSuffix)] = true
			case strings.HasSuffix(name, envSuffix):
				envs[strings.TrimSuffix(name, envSuffix)] = true
			case strings.HasSuffix(name, bodySuffix):
				bodies[strings.TrimSuffix(name, bodySuffix)] = true
			}
		}
		for id := range bodies {
			if !envs[id] || msgs[id] {
				s.log.Info("spool: removing body without envelope", "queue_id", id)
				os.Remove(s.path(id, bodySuffix))
				continue
			}
			if err := os.Rename(s.path(id, bodySuffix), s.path(id, msgSuffix)); err != nil {
				return nil, fmt.Errorf("converting %s to a queue file: %w", id, err)
			}
			s.log.Info("spool: message of the earlier format converted", "queue_id", id)
			msgs[id] = true
		}
		for id := range msgs {
			out = append(out, Queued{ID: id, Updated: envs[id]})
			delete(envs, id)
		}
		for id := range envs {
			s.log.Info("spool: removing envelope without queue file", "queue_id", id)
			os.Remove(s.path(id, envSuffix))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if moved > 0 {
		s.log.Info("spool: files moved into hashed subdirectories", "files", moved)
	}
	return out, s.syncDirs()
}

// syncDirs fsyncs msg/ and each subdirectory: what recovery moved or
// removed stays so.
func (s *Spool) syncDirs() error {
	if err := s.syncer.sync(s.dir); err != nil {
		return err
	}
	subs, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, sub := range subs {
		if sub.IsDir() {
			if err := s.syncer.sync(filepath.Join(s.dir, sub.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// castagnoli is the CRC-32C table (SSE4.2 in hardware on amd64).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// rehash moves the files of a flat spool (the earlier layout) into their
// subdirectories. A crash in the middle leaves some in each place: the
// next open goes on. Temp files at the top are leftovers: removed.
func (s *Spool) rehash() (int, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return 0, err
	}
	moved := 0
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() {
			continue
		}
		if strings.HasSuffix(name, tmpSuffix) {
			os.Remove(filepath.Join(s.dir, name))
			continue
		}
		id := name
		for _, suf := range []string{msgSuffix, envSuffix, bodySuffix} {
			id = strings.TrimSuffix(id, suf)
		}
		if id == name || !validID(id) {
			continue // not ours
		}
		if err := os.MkdirAll(filepath.Join(s.dir, hashDir(id)), 0o700); err != nil {
			return moved, err
		}
		if err := os.Rename(filepath.Join(s.dir, name), filepath.Join(s.dir, hashDir(id), name)); err != nil {
			return moved, fmt.Errorf("moving %s into its subdirectory: %w", name, err)
		}
		moved++
	}
	return moved, nil
}

func (s *Spool) quarantine(id string) {
	for _, suf := range []string{envSuffix, msgSuffix, bodySuffix} {
		s.moveAside(s.path(id, suf), id+suf)
	}
}

// setAside moves one file of a message to the quarantine, under a name of
// its own (the message stays).
func (s *Spool) setAside(id, suffix string) {
	s.moveAside(s.path(id, suffix), fmt.Sprintf("%s%s.%d", id, suffix, time.Now().UnixNano()))
}

// moveAside moves a file into the quarantine: a rename, or a copy when the
// quarantine is on another filesystem (msg/ mounted on its own), synced
// before the original goes. A file that cannot be moved stays where it is.
func (s *Spool) moveAside(from, name string) {
	if _, err := os.Lstat(from); err != nil {
		return
	}
	to := filepath.Join(s.corrupt, name)
	err := os.MkdirAll(s.corrupt, 0o700)
	if err == nil {
		err = os.Rename(from, to)
		if errors.Is(err, syscall.EXDEV) {
			err = copySynced(from, to)
			if err == nil {
				err = os.Remove(from)
			}
		}
	}
	if err != nil {
		s.log.Error("spool: cannot move a damaged file to the quarantine; it stays in the spool", "file", from, "err", err)
	}
}

func copySynced(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(to)
	}
	return err
}

// QuarantineDir is where recovery sets damaged files aside.
func (s *Spool) QuarantineDir() string { return s.corrupt }

// Quarantined lists the quarantine (files recovery set aside: damaged
// queue files and envelopes), oldest first.
func (s *Spool) Quarantined() ([]os.FileInfo, error) {
	ents, err := os.ReadDir(s.corrupt)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []os.FileInfo
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			out = append(out, fi)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ModTime().Before(out[j].ModTime()) })
	return out, nil
}

// classify maps storage errors the client should retry later (no space,
// quota, read-only or permission trouble) to ErrSpoolFull.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS, syscall.EACCES, syscall.EPERM, syscall.EIO:
			return fmt.Errorf("%w: %w", ErrSpoolFull, err)
		}
	}
	return err
}

// dirSyncer batches directory fsyncs: callers that renamed a file in a
// directory ask for its sync; one fsync of that directory that starts
// after their rename covers all of them. A batch syncs each directory
// named in it once (on ext4 and xfs the first forces the journal commit
// the others then find done).
type dirSyncer struct {
	mu   sync.Mutex
	dirs map[string]*os.File // kept open: msg/
	// fsync is the directory sync (a hook for tests); syncs counts
	// batches.
	fsync func(dir *os.File) error
	syncs atomic.Int64
	reqs  chan syncReq
	quit  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

type syncReq struct {
	dir  string
	done chan error
}

func newDirSyncer(path string) (*dirSyncer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	d := &dirSyncer{dirs: map[string]*os.File{path: f}, reqs: make(chan syncReq, 1024), quit: make(chan struct{})}
	d.fsync = syncDir
	d.wg.Add(1)
	go d.loop()
	return d, nil
}

// open returns the directory to sync and whether the caller closes it:
// only msg/ stays open (a descriptor per subdirectory would be 256 of a
// process's descriptors, and opening one costs microseconds).
func (d *dirSyncer) open(path string) (f *os.File, closeIt bool, err error) {
	d.mu.Lock()
	f = d.dirs[path]
	d.mu.Unlock()
	if f != nil {
		return f, false, nil
	}
	f, err = os.Open(path)
	return f, true, err
}

func (d *dirSyncer) loop() {
	defer d.wg.Done()
	batch := make([]syncReq, 0, 64)
	for {
		select {
		case r := <-d.reqs:
			batch = append(batch[:0], r)
		case <-d.quit:
			return
		}
	drain: // everyone who asked before these fsyncs start is covered by them
		for {
			select {
			case r := <-d.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		errs := map[string]error{}
		for _, r := range batch {
			if _, done := errs[r.dir]; done {
				continue
			}
			f, closeIt, err := d.open(r.dir)
			if err == nil {
				err = d.fsync(f)
				if closeIt {
					f.Close()
				}
			}
			errs[r.dir] = err
		}
		d.syncs.Add(1)
		for _, r := range batch {
			r.done <- errs[r.dir]
		}
	}
}

// sync returns once an fsync of dir that began after the call has ended.
func (d *dirSyncer) sync(dir string) error {
	r := syncReq{dir, make(chan error, 1)}
	select {
	case d.reqs <- r:
	case <-d.quit:
		return errors.New("spool closed")
	}
	select {
	case err := <-r.done:
		return err
	case <-d.quit:
		return errors.New("spool closed")
	}
}

func (d *dirSyncer) close() error {
	d.once.Do(func() { close(d.quit) })
	d.wg.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range d.dirs {
		f.Close()
	}
	return nil
}

var _ io.Writer = (*Writer)(nil)
