package queue

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
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
// precedence over the one in the queue file. Spools of the earlier format
// (ID.body + ID.env) are converted when opened.
const (
	msgSuffix  = ".msg"
	envSuffix  = ".env"
	tmpSuffix  = ".tmp"
	bodySuffix = ".body" // earlier format: converted by recover

	footerPrefix = "\nmailfwd-envelope "
	footerLen    = len(footerPrefix) + 16 + 1 // prefix, %016x length, "\n"
)

// Spool is the on-disk queue directory. All files live in one directory so
// that a rename and the directory fsync after it are all a commit needs.
type Spool struct {
	dir       string
	log       *slog.Logger
	syncer    *dirSyncer
	corrupt   string
	mu        sync.Mutex
	recovered []*envelope.Envelope
	unlock    func()
}

// OpenSpool creates dir if needed, recovers from a crash (see recover) and
// starts its directory syncer. Recovery runs here, before the spool can
// accept anything, because it deletes temp files: run later it would delete
// the files of messages being received.
func OpenSpool(dir string, log *slog.Logger) (*Spool, error) {
	if log == nil {
		log = slog.Default()
	}
	msgDir := filepath.Join(dir, "msg")
	if err := os.MkdirAll(msgDir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &Spool{dir: msgDir, log: log, corrupt: filepath.Join(dir, "corrupt")}
	// The lock comes first: recovery deletes temp files, which must never
	// happen under a process that is writing them.
	unlock, err := s.Lock()
	if err != nil {
		return nil, fmt.Errorf("%w (%s): %v", ErrSpoolLocked, dir, err)
	}
	s.unlock = unlock
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

// ReadSpool gives read-only access (List, Load, OpenBody) to a spool that a
// running daemon may be writing: files only ever appear by rename, so a
// reader sees whole files.
func ReadSpool(dir string) *Spool {
	return &Spool{dir: filepath.Join(dir, "msg"), log: slog.Default()}
}

// TakeRecovered returns, once, the messages found in the spool when it was
// opened: the scheduler's starting work.
func (s *Spool) TakeRecovered() []*envelope.Envelope {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.recovered
	s.recovered = nil
	return r
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

// Dir is where message files live.
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
	if err != nil {
		return n, classify(err)
	}
	return n, nil
}

// Commit makes the message durable: the envelope and footer are appended
// to the body, the queue file is renamed into place, then one syncfs(2) of
// the spool's filesystem, shared with every commit that renamed before it
// began (group commit), covers the file's data and its directory entry at
// once. Only when Commit returns nil may the client be told 250.
//
// A crash before that sync may leave the file renamed but empty or cut
// short. The client never got a 250 for such a message, and recovery
// discards it: its footer is missing or does not match.
func (w *Writer) Commit(env *envelope.Envelope) error {
	if w.done {
		return errors.New("spool: message already committed or aborted")
	}
	env.ID = w.id
	env.Size = w.n
	b, err := env.Marshal()
	if err != nil {
		w.Abort()
		return err
	}
	w.bw.Write(b)
	fmt.Fprintf(w.bw, "%s%016x\n", footerPrefix, len(b))
	err = w.bw.Flush()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.done = true
	s := w.s
	if err == nil {
		err = os.Rename(s.path(w.id, tmpSuffix), s.path(w.id, msgSuffix))
	}
	if err != nil {
		os.Remove(s.path(w.id, tmpSuffix))
		return classify(err)
	}
	if err := s.syncer.sync(); err != nil {
		// The file may or may not be durable; without a 250 the client
		// retries, and a duplicate is better than a loss.
		return classify(err)
	}
	return nil
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

func (s *Spool) path(id, suffix string) string { return filepath.Join(s.dir, id+suffix) }

// Update durably replaces a message's envelope (recipient states, next
// attempt time) with ID.env, which then takes precedence over the one in
// the queue file. The new file is fsynced before it replaces the old one,
// so a crash leaves one of the two whole, never an empty envelope.
func (s *Spool) Update(env *envelope.Envelope) error {
	b, err := env.Marshal()
	if err != nil {
		return err
	}
	tmp := s.path(env.ID, envSuffix+tmpSuffix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return classify(err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return classify(err)
	}
	if err := os.Rename(tmp, s.path(env.ID, envSuffix)); err != nil {
		os.Remove(tmp)
		return classify(err)
	}
	return classify(s.syncer.sync())
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
	b, err := os.ReadFile(s.path(id, envSuffix))
	if err == nil {
		return envelope.Unmarshal(b)
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
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var out []*envelope.Envelope
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), msgSuffix); ok {
			if env, err := s.Load(id); err == nil {
				out = append(out, env)
			}
		}
	}
	return out, nil
}

// recover returns every committed message, oldest first, after cleaning up
// what a crash can leave: temp files, queue files whose commit never
// finished (no 250 was given for them), envelopes whose queue file is gone
// (a removal cut short). An envelope that does not parse is moved aside
// with its message, never deleted. Messages of the earlier two-file format
// are converted in place: the body becomes the queue file, and its ID.env
// stays the envelope.
func (s *Spool) recover() ([]*envelope.Envelope, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	msgs, envs, bodies := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, tmpSuffix):
			s.log.Info("spool: removing partial file from an interrupted write", "file", name)
			os.Remove(filepath.Join(s.dir, name))
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
	ids := make([]string, 0, len(msgs))
	for id := range msgs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var out []*envelope.Envelope
	for _, id := range ids {
		delete(envs, id)
		env, err := s.Load(id)
		switch {
		case errors.Is(err, errNoFooter):
			s.log.Warn("spool: queue file incomplete (commit interrupted before 250), removing", "queue_id", id)
			s.Remove(id)
			continue
		case err != nil:
			if st, serr := os.Stat(s.path(id, envSuffix)); serr == nil && st.Size() == 0 {
				// the earlier format renamed envelopes unsynced
				s.log.Warn("spool: empty envelope (commit interrupted before 250), removing", "queue_id", id)
				s.Remove(id)
				continue
			}
			s.log.Error("spool: unreadable envelope, moving aside", "queue_id", id, "err", err)
			s.quarantine(id)
			continue
		}
		if st, serr := os.Stat(s.path(id, msgSuffix)); serr != nil || st.Size() < env.Size {
			s.log.Warn("spool: body shorter than recorded (commit interrupted before 250), removing", "queue_id", id)
			s.Remove(id)
			continue
		}
		out = append(out, env)
	}
	for id := range envs {
		s.log.Info("spool: removing envelope without queue file", "queue_id", id)
		os.Remove(s.path(id, envSuffix))
	}
	return out, s.syncer.sync()
}

func (s *Spool) quarantine(id string) {
	if err := os.MkdirAll(s.corrupt, 0o700); err != nil {
		s.log.Error("spool: cannot create corrupt dir", "err", err)
		return
	}
	for _, suf := range []string{envSuffix, msgSuffix} {
		os.Rename(s.path(id, suf), filepath.Join(s.corrupt, id+suf))
	}
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

// dirSyncer batches directory fsyncs: callers that renamed a file ask for
// a sync; one fsync that starts after their rename covers all of them.
type dirSyncer struct {
	dir *os.File
	// fsync is the directory sync (a hook for tests); syncs counts them.
	fsync func() error
	syncs atomic.Int64
	reqs  chan chan error
	quit  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

func newDirSyncer(path string) (*dirSyncer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	d := &dirSyncer{dir: f, reqs: make(chan chan error, 1024), quit: make(chan struct{})}
	// syncfs: the data and metadata of every file in the spool's
	// filesystem, in one call, whatever the batch size.
	d.fsync = func() error { return unix.Syncfs(int(f.Fd())) }
	d.wg.Add(1)
	go d.loop()
	return d, nil
}

func (d *dirSyncer) loop() {
	defer d.wg.Done()
	batch := make([]chan error, 0, 64)
	for {
		select {
		case r := <-d.reqs:
			batch = append(batch[:0], r)
		case <-d.quit:
			return
		}
	drain: // everyone who asked before this fsync starts is covered by it
		for {
			select {
			case r := <-d.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		err := d.fsync()
		d.syncs.Add(1)
		for _, r := range batch {
			r <- err
		}
	}
}

func (d *dirSyncer) sync() error {
	r := make(chan error, 1)
	select {
	case d.reqs <- r:
	case <-d.quit:
		return errors.New("spool closed")
	}
	select {
	case err := <-r:
		return err
	case <-d.quit:
		return errors.New("spool closed")
	}
}

func (d *dirSyncer) close() error {
	d.once.Do(func() { close(d.quit) })
	d.wg.Wait()
	return d.dir.Close()
}

var _ io.Writer = (*Writer)(nil)
