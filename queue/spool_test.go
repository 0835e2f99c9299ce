package queue

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"mailfwd/queue/envelope"
)

func openTestSpool(t *testing.T) *Spool {
	t.Helper()
	return openSpoolAt(t, t.TempDir())
}

func openSpoolAt(t *testing.T, dir string) *Spool {
	t.Helper()
	s, err := OpenSpool(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func commit(t *testing.T, s *Spool, body string, rcpts ...string) *envelope.Envelope {
	t.Helper()
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, body); err != nil {
		t.Fatal(err)
	}
	env := &envelope.Envelope{From: "alice@example.org", Received: time.Now()}
	for _, r := range rcpts {
		env.Recipients = append(env.Recipients, envelope.Recipient{Addr: r, OrigTo: r, Status: envelope.Pending})
	}
	if err := w.Commit(env); err != nil {
		t.Fatal(err)
	}
	return env
}

func TestSpoolCommitScan(t *testing.T) {
	s := openTestSpool(t)
	env := commit(t, s, "Subject: x\r\n\r\nbody\r\n", "a@example.com", "b@example.com")
	if env.ID == "" || env.Size != int64(len("Subject: x\r\n\r\nbody\r\n")) {
		t.Fatalf("commit set id=%q size=%d", env.ID, env.Size)
	}
	got, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != env.ID || len(got[0].Recipients) != 2 || got[0].From != "alice@example.org" {
		t.Fatalf("scan = %+v", got)
	}
	f, err := s.OpenBody(env)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "Subject: x\r\n\r\nbody\r\n" {
		t.Fatalf("body = %q", b)
	}
	// Nothing but the queue file is left in the directory.
	names := spoolFiles(t, s)
	want := []string{hashDir(env.ID) + "/" + env.ID + ".msg"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("spool holds %v, want %v", names, want)
	}
}

// spoolFiles lists every file under the spool's message directory, as
// "subdir/name" (or "name" at the top).
func spoolFiles(t *testing.T, s *Spool) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(s.Dir(), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(s.Dir(), p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// What a crash can leave behind is cleaned up when the spool is opened
// again, nothing that was committed is touched, and messages of the earlier
// two-file format are converted.
func TestSpoolRecoveryCleansCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	s := openSpoolAt(t, dir)
	keep := commit(t, s, "kept\r\n", "a@example.com")
	updated := commit(t, s, "updated\r\n", "a@example.com", "b@example.com")
	updated.Recipients[0].Status = envelope.Sent
	if err := s.Update(updated); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) { // at the top: the flat layout of earlier versions
		if err := os.WriteFile(filepath.Join(s.Dir(), name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	envJSON := func(id string, size int) string {
		return fmt.Sprintf(`{"id":%q,"size":%d,"recipients":[{"addr":"x@y.z","status":"pending"}]}`, id, size)
	}
	write("00AAA.tmp", "partial")                             // queue file being written
	write("00BBB.msg", "")                                    // renamed, but the data never reached the disk
	write("00BB2.msg", "body\r\nno footer at all here")       // cut short
	write("00BB3.msg", "b"+footerPrefix+"00000000000000ff\n") // footer claims more than the file holds
	write("00CCC.env", envJSON("00CCC", 4))                   // queue file removed, envelope not yet
	write("00DDD.env.tmp", "{")                               // envelope being written
	// the earlier format: ID.body + ID.env
	write("00EEE.body", "body") // envelope garbage
	write("00EEE.env", "not json")
	write("00FFF.body", "body") // renamed, but the data never reached the disk
	write("00FFF.env", "")
	write("00GGG.body", "short") // body cut short by the crash
	write("00GGG.env", envJSON("00GGG", 100))
	write("00HHH.body", "legacy body\r\n") // a whole message
	write("00HHH.env", envJSON("00HHH", 13))
	write("00III.body", "orphan body") // envelope never renamed
	s.Close()

	s = openSpoolAt(t, dir)
	// Opening reads directory entries only; the first read of each
	// message (the scheduler's, when it is due) finishes the cleanup.
	var got []*envelope.Envelope
	for _, r := range s.TakeRecovered() {
		env, err := s.LoadQueued(r.ID)
		if err != nil {
			if !errors.Is(err, ErrGone) {
				t.Errorf("%s: %v", r.ID, err)
			}
			continue
		}
		if r.Updated != (r.ID == updated.ID || r.ID == "00HHH") {
			t.Errorf("%s: recovered as updated=%v", r.ID, r.Updated)
		}
		got = append(got, env)
	}
	var ids []string
	for _, e := range got {
		ids = append(ids, e.ID)
	}
	wantIDs := []string{"00HHH", keep.ID, updated.ID}
	sort.Strings(wantIDs)
	if strings.Join(ids, " ") != strings.Join(wantIDs, " ") {
		t.Fatalf("recovered %v, want %v", ids, wantIDs)
	}
	for _, e := range got {
		if e.ID == updated.ID && (e.Recipients[0].Status != envelope.Sent || e.Recipients[1].Status != envelope.Pending) {
			t.Fatalf("the updated envelope was not the one recovered: %+v", e.Recipients)
		}
		body, err := s.OpenBody(e)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(body)
		body.Close()
		want := map[string]string{"00HHH": "legacy body\r\n", keep.ID: "kept\r\n", updated.ID: "updated\r\n"}[e.ID]
		if string(b) != want {
			t.Errorf("%s: body %q, want %q", e.ID, b, want)
		}
	}
	names := spoolFiles(t, s)
	var want []string
	for _, f := range []string{"00HHH.env", "00HHH.msg", keep.ID + ".msg", updated.ID + ".env", updated.ID + ".msg"} {
		id := strings.TrimSuffix(strings.TrimSuffix(f, ".env"), ".msg")
		want = append(want, hashDir(id)+"/"+f)
	}
	sort.Strings(want)
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("after recovery the spool holds %v, want %v", names, want)
	}
	// What is not whole is moved aside, never deleted: an acknowledged
	// message whose disk lost data must stay for the administrator.
	for _, f := range []string{"00EEE.env", "00EEE.msg", "00BBB.msg", "00BB2.msg", "00BB3.msg",
		"00FFF.env", "00FFF.msg", "00GGG.env", "00GGG.msg"} {
		if _, err := os.Stat(filepath.Join(filepath.Dir(s.Dir()), "corrupt", f)); err != nil {
			t.Errorf("damaged message not quarantined: %v", err)
		}
	}
	if q, err := s.Quarantined(); err != nil || len(q) != 9 {
		t.Errorf("Quarantined lists %d files (%v), want 9", len(q), err)
	}
}

// Whatever a queue file holds, reading its envelope fails cleanly or gives
// an envelope that matches the body before it.
func FuzzQueueFile(f *testing.F) {
	f.Add([]byte("body\r\n{\"id\":\"Q\",\"size\":6}" + footerPrefix + "000000000000000f\n"))
	f.Add([]byte(footerPrefix + "0000000000000001\n"))
	f.Add([]byte("x"))
	dir := f.TempDir()
	s := &Spool{dir: dir}
	os.MkdirAll(filepath.Dir(s.path("Q", msgSuffix)), 0o700)
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(s.path("Q", msgSuffix), b, 0o600); err != nil {
			t.Fatal(err)
		}
		env, err := s.loadQueueFile("Q")
		if err != nil {
			return
		}
		if env.ID != "Q" || env.Size < 0 || env.Size > int64(len(b)-footerLen) {
			t.Fatalf("%q gave %+v", b, env)
		}
	})
}

func TestSpoolAbortLeavesNothing(t *testing.T) {
	s := openTestSpool(t)
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "half a message")
	w.Abort()
	if n := spoolFiles(t, s); len(n) != 0 {
		t.Fatalf("abort left %v", n)
	}
}

func TestSpoolUpdateAndRemove(t *testing.T) {
	s := openTestSpool(t)
	env := commit(t, s, "x\r\n", "a@example.com", "b@example.com")
	env.Recipients[0].Status = envelope.Sent
	env.Attempts = 3
	if err := s.Update(env); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Recipients[0].Status != envelope.Sent || got.Recipients[1].Status != envelope.Pending || got.Attempts != 3 {
		t.Fatalf("reloaded %+v", got)
	}
	if err := s.Remove(env.ID); err != nil {
		t.Fatal(err)
	}
	if n := spoolFiles(t, s); len(n) != 0 {
		t.Fatalf("remove left %v", n)
	}
}

// Concurrent commits all become durable and distinct (group commit must not
// lose or mix anyone's message).
func TestSpoolConcurrentCommits(t *testing.T) {
	s := openTestSpool(t)
	const n = 64
	var wg sync.WaitGroup
	ids := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i] = commit(t, s, strings.Repeat("x", i+1), "a@example.com").ID
		}()
	}
	wg.Wait()
	got, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("scan found %d of %d messages", len(got), n)
	}
	sizes := map[string]int64{}
	for _, e := range got {
		sizes[e.ID] = e.Size
	}
	for i, id := range ids {
		if sizes[id] != int64(i+1) {
			t.Fatalf("message %s has size %d, want %d", id, sizes[id], i+1)
		}
	}
}

// Group commit: concurrent commits share directory fsyncs, and each commit
// still returns only after an fsync that started after its rename.
func TestSpoolGroupCommit(t *testing.T) {
	s := openTestSpool(t)
	var mu sync.Mutex
	var renamedBeforeSync []int // how many commits had renamed when each fsync began
	s.syncer.fsync = func(*os.File) error {
		n := 0
		for _, f := range spoolFiles(t, s) {
			if strings.HasSuffix(f, msgSuffix) {
				n++
			}
		}
		mu.Lock()
		renamedBeforeSync = append(renamedBeforeSync, n)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond) // a slow disk
		return nil
	}
	const n = 50
	var wg sync.WaitGroup
	start := s.syncer.syncs.Load()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env := commit(t, s, strings.Repeat("x", i+1), "a@example.com")
			// Durable when Commit returned: an fsync began after our rename.
			mu.Lock()
			defer mu.Unlock()
			if _, err := os.Stat(s.path(env.ID, msgSuffix)); err != nil {
				t.Errorf("committed queue file missing: %v", err)
			}
		}()
	}
	wg.Wait()
	syncs := s.syncer.syncs.Load() - start
	if syncs >= n/2 {
		t.Fatalf("%d directory fsyncs for %d concurrent commits: not batched", syncs, n)
	}
	if last := renamedBeforeSync[len(renamedBeforeSync)-1]; last != n {
		t.Fatalf("last fsync began with %d of %d envelopes renamed", last, n)
	}
	t.Logf("%d commits, %d directory fsyncs", n, syncs)
}

// A spool of the flat layout (every file in msg/) is moved into hashed
// subdirectories when opened, messages intact; TakeRecovered says which
// were updated, and DueTime gives an updated one its next attempt from the
// envelope file alone.
func TestSpoolRehashAndDueTime(t *testing.T) {
	root := t.TempDir()
	s := openSpoolAt(t, root)
	fresh := commit(t, s, "m1\r\n", "a@x.test")
	later := commit(t, s, "m2\r\n", "b@x.test")
	next := time.Now().Add(90 * time.Minute).Truncate(time.Second)
	later.NextAttempt = next
	if err := s.Update(later); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Flatten, as an older mailfwd left it.
	for _, id := range []string{fresh.ID, later.ID} {
		files, _ := filepath.Glob(filepath.Join(s.Dir(), hashDir(id), id+".*"))
		for _, f := range files {
			if err := os.Rename(f, filepath.Join(s.Dir(), filepath.Base(f))); err != nil {
				t.Fatal(err)
			}
		}
	}
	os.WriteFile(filepath.Join(s.Dir(), "README"), []byte("not ours"), 0o600)

	s = openSpoolAt(t, root)
	for _, id := range []string{fresh.ID, later.ID} {
		if _, err := os.Stat(filepath.Join(s.Dir(), hashDir(id), id+".msg")); err != nil {
			t.Fatalf("not moved into its subdirectory: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "README")); err != nil {
		t.Fatalf("a file that is not a queue file was touched: %v", err)
	}
	rec := s.TakeRecovered()
	if len(rec) != 2 || rec[0].ID != fresh.ID || rec[0].Updated || rec[1].ID != later.ID || !rec[1].Updated {
		t.Fatalf("recovered %+v", rec)
	}
	if again := s.TakeRecovered(); len(again) != 0 {
		t.Fatalf("TakeRecovered gave %d twice", len(again))
	}
	if got := s.DueTime(later.ID); !got.Equal(next) {
		t.Fatalf("DueTime = %v, want %v", got, next)
	}
	if got := s.DueTime(fresh.ID); !got.IsZero() {
		t.Fatalf("DueTime of a message never updated = %v, want zero (due now)", got)
	}
	env, err := s.LoadQueued(later.ID)
	if err != nil || len(env.Recipients) != 1 || env.Recipients[0].Addr != "b@x.test" {
		t.Fatalf("LoadQueued after the move: %+v, %v", env, err)
	}
	body, err := s.OpenBody(fresh)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(body)
	body.Close()
	if string(b) != "m1\r\n" {
		t.Fatalf("body after the move: %q", b)
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		NewID(): true, "6619DC953900D53AC52": true,
		"": false, "../../etc/passwd": false, "a/b": false, "..": false, "ID with space": false,
	} {
		if got := validID(id); got != want {
			t.Errorf("validID(%q) = %v, want %v", id, got, want)
		}
	}
}

// A commit whose sync fails leaves nothing behind: its client gets a 4xx
// and sends again, so a file left here would be delivered beside the
// retry (it was, at the next restart).
func TestSpoolFailedSyncLeavesNoFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(s *Spool)
	}{
		{"the queue file's fdatasync", func(s *Spool) {
			s.dataSync = func(*os.File) error { return &os.PathError{Op: "fdatasync", Path: "x", Err: syscall.EIO} }
		}},
		{"the directory's fsync", func(s *Spool) {
			s.syncer.fsync = func(*os.File) error { return &os.PathError{Op: "fsync", Path: "x", Err: syscall.EIO} }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			s := openSpoolAt(t, root)
			tc.set(s)
			w, err := s.Create()
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(w, "Subject: x\r\n\r\nbody\r\n")
			err = w.Commit(&envelope.Envelope{From: "a@example.org", Recipients: []envelope.Recipient{{Addr: "b@example.com", Status: envelope.Pending}}})
			if !errors.Is(err, ErrSpoolFull) {
				t.Fatalf("Commit with a failing sync: %v, want ErrSpoolFull (a 4xx)", err)
			}
			if left := spoolFiles(t, s); len(left) != 0 {
				t.Fatalf("files left after the failed commit: %v", left)
			}
			s.Close()
			s = openSpoolAt(t, root)
			if r := s.TakeRecovered(); len(r) != 0 {
				t.Fatalf("a restart recovers %v", r)
			}
		})
	}
}

// Two updates of one message at once never leave an unreadable envelope
// (they shared one temp file, truncated by each: 50 of 300 rounds did).
func TestSpoolConcurrentUpdates(t *testing.T) {
	s := openTestSpool(t)
	env := commit(t, s, "m\r\n", "a@x.test", "b@x.test")
	for round := range 300 {
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				e := *env
				e.Recipients = append([]envelope.Recipient(nil), env.Recipients...)
				e.Attempts = round*2 + i
				e.Recipients[i].LastReply = strings.Repeat("4", 1+round%7*i*100)
				if err := s.Update(&e); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		b, err := os.ReadFile(s.path(env.ID, envSuffix))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := envelope.Unmarshal(b); err != nil {
			t.Fatalf("round %d: envelope unreadable after two concurrent updates: %v (%d bytes)", round, err, len(b))
		}
	}
	if tmps, _ := filepath.Glob(filepath.Join(s.Dir(), "*", "*.tmp")); len(tmps) > 0 {
		t.Fatalf("temp files left: %v", tmps)
	}
}

// An empty or unreadable ID.env beside a whole queue file: the envelope
// committed inside the queue file is used, and the bad one set aside (an
// empty one made recovery delete the message).
func TestSpoolBadEnvelopeFallsBack(t *testing.T) {
	for name, content := range map[string]string{"empty": "", "garbage": "{\"id\":", "another message's": `{"id":"OTHER","size":3}`} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			s := openSpoolAt(t, root)
			env := commit(t, s, "m\r\n", "a@x.test")
			env.Attempts = 3
			if err := s.Update(env); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(s.path(env.ID, envSuffix), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			s.Close()
			s = openSpoolAt(t, root)
			got, err := s.LoadQueued(env.ID)
			if err != nil {
				t.Fatalf("LoadQueued: %v", err)
			}
			if got.ID != env.ID || len(got.Recipients) != 1 || got.Attempts != 0 {
				t.Fatalf("fell back to %+v, want the queue file's envelope", got)
			}
			if _, err := os.Stat(s.path(env.ID, envSuffix)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the bad envelope is still in place: %v", err)
			}
			if q, _ := s.Quarantined(); len(q) != 1 {
				t.Fatalf("%d files in the quarantine, want the bad envelope", len(q))
			}
		})
	}
}

// A body that does not match its checksum (pages the disk lost: zeroes) is
// quarantined at recovery, never delivered; one intact is delivered.
func TestSpoolBodyChecksum(t *testing.T) {
	root := t.TempDir()
	s := openSpoolAt(t, root)
	good := commit(t, s, "Subject: ok\r\n\r\nintact\r\n", "a@x.test")
	bad := commit(t, s, "Subject: lost\r\n\r\nthe disk lost this\r\n", "a@x.test")
	if !good.HasCRC || good.BodyCRC == 0 {
		t.Fatalf("no checksum recorded: %+v", good)
	}
	f, err := os.OpenFile(s.path(bad.ID, msgSuffix), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, 8), 4) // zeroed, as a lost page reads back
	f.Close()
	s.Close()
	s = openSpoolAt(t, root)
	if _, err := s.LoadQueued(good.ID); err != nil {
		t.Fatalf("intact message: %v", err)
	}
	if _, err := s.LoadQueued(bad.ID); !errors.Is(err, ErrGone) {
		t.Fatalf("damaged body: %v, want ErrGone", err)
	}
	if _, err := os.Stat(filepath.Join(root, "corrupt", bad.ID+msgSuffix)); err != nil {
		t.Fatalf("damaged message not in the quarantine: %v", err)
	}
}
