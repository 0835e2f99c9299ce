package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"mailfwd/queue"
	"mailfwd/queue/envelope"
)

// controlRequest is one line on the daemon's control socket.
type controlRequest struct {
	Op string `json:"op"` // flush, hold, release, delete
	ID string `json:"id,omitempty"`
}

type controlReply struct {
	Error        string                   `json:"error,omitempty"`
	Destinations []queue.DestinationState `json:"destinations,omitempty"`
}

// queueOps is what the control socket drives: the running scheduler.
type queueOps interface {
	Flush(id string) error
	Hold(id string) error
	Release(id string) error
	Delete(id string) error
	Destinations() []queue.DestinationState
}

func applyOp(ops queueOps, r controlRequest) error {
	switch r.Op {
	case "destinations":
		return nil // answered with the state (serveControl)
	case "flush":
		return ops.Flush(r.ID)
	case "hold":
		return ops.Hold(r.ID)
	case "release":
		return ops.Release(r.ID)
	case "delete":
		return ops.Delete(r.ID)
	}
	return fmt.Errorf("unknown operation %q", r.Op)
}

// serveControl answers queue commands on a unix socket only root (or the
// daemon's user) can reach, until ctx ends.
func serveControl(ctx context.Context, path string, ops queueOps, log *slog.Logger) error {
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	os.Chmod(path, 0o600)
	go func() { <-ctx.Done(); l.Close(); os.Remove(path) }()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				var req controlRequest
				if err := json.NewDecoder(io.LimitReader(c, 4096)).Decode(&req); err != nil {
					json.NewEncoder(c).Encode(controlReply{Error: "bad request: " + err.Error()})
					return
				}
				rep := controlReply{}
				if err := applyOp(ops, req); err != nil {
					rep.Error = err.Error()
				} else if req.Op == "destinations" {
					rep.Destinations = ops.Destinations()
				}
				log.Info("queue command", "op", req.Op, "queue_id", req.ID, "error", rep.Error)
				json.NewEncoder(c).Encode(rep)
			}()
		}
	}()
	return nil
}

// directOps changes a spool no daemon is running on (we hold its lock).
type directOps struct{ s *queue.Spool }

func (d directOps) update(id string, f func(*envelope.Envelope)) error {
	env, err := d.s.Load(id)
	if err != nil {
		return fmt.Errorf("%w: %s", queue.ErrNoMessage, id)
	}
	f(env)
	return d.s.Update(env)
}

func (d directOps) Flush(id string) error {
	if id != "" {
		return d.update(id, func(e *envelope.Envelope) { e.NextAttempt = time.Now() })
	}
	envs, err := d.s.List()
	for _, e := range envs {
		if err := d.update(e.ID, func(e *envelope.Envelope) { e.NextAttempt = time.Now() }); err != nil {
			return err
		}
	}
	return err
}
func (d directOps) Hold(id string) error {
	return d.update(id, func(e *envelope.Envelope) { e.Held = true })
}
func (d directOps) Release(id string) error {
	return d.update(id, func(e *envelope.Envelope) { e.Held, e.NextAttempt = false, time.Now() })
}
func (d directOps) Destinations() []queue.DestinationState { return nil }

func (d directOps) Delete(id string) error {
	if _, err := d.s.Load(id); err != nil {
		return fmt.Errorf("%w: %s", queue.ErrNoMessage, id)
	}
	return d.s.Remove(id)
}

// queueCommand is `mailfwd queue`: list and show read the spool; the other
// operations go to the running daemon, or, when none runs, straight to the
// spool under its lock.
func queueCommand(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("queue", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "config file (default: the embedded default)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: mailfwd queue [-config FILE] list | show ID | destinations | quarantine | flush [ID] | hold ID | release ID | delete ID\n")
	}
	if err := fs.Parse(args); err != nil {
		return errExit{2, err.Error()}
	}
	c, _, err := loadConfig(flag.NewFlagSet("queue", flag.ContinueOnError), configArgs(*cfgPath))
	if err != nil {
		return err
	}
	dir := c.Path(c.SpoolDir)
	op, rest := fs.Arg(0), fs.Args()
	if len(rest) > 0 {
		rest = rest[1:]
	}
	id := ""
	if len(rest) > 0 {
		id = rest[0]
	}
	needID := map[string]bool{"show": true, "hold": true, "release": true, "delete": true}
	switch {
	case op == "":
		fs.Usage()
		return errExit{2, "no operation given"}
	case needID[op] && id == "":
		return errExit{2, op + " needs a queue ID"}
	}
	switch op {
	case "list":
		return listQueue(queue.ReadSpool(dir), stdout)
	case "show":
		return showMessage(queue.ReadSpool(dir), id, stdout)
	case "quarantine":
		return listQuarantine(queue.ReadSpool(dir), stdout)
	case "flush", "hold", "release", "delete", "destinations":
	default:
		return errExit{2, fmt.Sprintf("unknown operation %q", op)}
	}
	req := controlRequest{Op: op, ID: id}
	if s, err := queue.OpenSpool(dir, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		defer s.Close()
		if op == "destinations" {
			return errExit{1, "no mailfwd is running on this spool: destination state lives in the running relay"}
		}
		if err := applyOp(directOps{s}, req); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s %s: done (no daemon running; spool changed directly)\n", op, id)
		return nil
	} else if !errors.Is(err, queue.ErrSpoolLocked) {
		return err
	}
	conn, err := net.DialTimeout("unix", queue.ReadSpool(dir).ControlSocket(), 5*time.Second)
	if err != nil {
		return fmt.Errorf("the spool is locked by a running mailfwd, but its control socket does not answer: %w", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return err
	}
	var rep controlReply
	if err := json.NewDecoder(bufio.NewReader(conn)).Decode(&rep); err != nil {
		return fmt.Errorf("no answer from the daemon: %w", err)
	}
	if rep.Error != "" {
		return errors.New(rep.Error)
	}
	if op == "destinations" {
		printDestinations(rep.Destinations, stdout)
		return nil
	}
	fmt.Fprintf(stdout, "%s %s: done\n", op, id)
	return nil
}

// listQuarantine prints what recovery set aside (damaged queue files and
// envelopes): never delivered, never deleted; the administrator decides.
func listQuarantine(s *queue.Spool, w io.Writer) error {
	files, err := s.Quarantined()
	if err != nil {
		return err
	}
	if len(files) == 0 {
		fmt.Fprintln(w, "Quarantine is empty")
		return nil
	}
	fmt.Fprintf(w, "%-44s %10s  %s\n", "-File-", "--Size--", "-Set aside-")
	for _, f := range files {
		fmt.Fprintf(w, "%-44s %10d  %s\n", f.Name(), f.Size(), f.ModTime().Local().Format("Mon Jan _2 15:04:05"))
	}
	fmt.Fprintf(w, "-- %d files in %s\n", len(files), s.QuarantineDir())
	return nil
}

// printDestinations shows the scheduler's view of each destination, like
// qshape and qmgr's: its window, what waits for it, whether it is alive.
func printDestinations(ds []queue.DestinationState, w io.Writer) {
	if len(ds) == 0 {
		fmt.Fprintln(w, "No destination used yet")
		return
	}
	fmt.Fprintf(w, "%-40s %-8s %9s %6s %7s %7s %8s %8s %8s  %s\n",
		"-Destination-", "-State-", "-Window-", "Active", "Queued", "Parked", "Backlog", "Sent", "Deferred", "-Last error / until-")
	for _, d := range ds {
		note := oneLineReply(d.LastError)
		if !d.Until.IsZero() {
			note = d.Until.Local().Format("15:04:05") + " " + note
		}
		fmt.Fprintf(w, "%-40s %-8s %5.1f/%-3d %6d %7d %7d %8d %8d %8d  %s\n",
			d.Destination, d.State, d.Concurrency, d.Max, d.Active, d.Queued, d.Parked, d.Backlog, d.Sent, d.Deferred, note)
	}
}

// listQueue prints the queue like postqueue -p: ID ('!' when held), size,
// arrival, sender, then each pending or failed recipient with its last
// reply. It streams, one spool subdirectory at a time (in queue-directory
// order, as postqueue does), so it starts at once and holds nothing of
// the backlog.
func listQueue(s *queue.Spool, w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	defer bw.Flush()
	var total int64
	n := 0
	err := s.Walk(func(e *envelope.Envelope) error {
		if n == 0 {
			fmt.Fprintf(bw, "%-22s %8s %-20s %s\n", "-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")
		}
		n++
		id := e.ID
		if e.Held {
			id += "!"
		}
		from := e.From
		if from == "" {
			from = "MAILER-DAEMON"
		}
		fmt.Fprintf(bw, "%-22s %8d %-20s %s\n", id, e.Size, e.Received.Local().Format("Mon Jan _2 15:04:05"), from)
		for _, r := range e.Recipients {
			if r.Status == envelope.Sent {
				continue
			}
			if r.LastReply != "" {
				fmt.Fprintf(bw, "%53s(%s: %s)\n", "", r.Status, oneLineReply(r.LastReply))
			}
			fmt.Fprintf(bw, "%53s%s\n", "", r.Addr)
		}
		fmt.Fprintln(bw)
		total += e.Size
		return nil
	})
	if err != nil {
		return err
	}
	if n == 0 {
		fmt.Fprintln(bw, "Mail queue is empty")
		return nil
	}
	fmt.Fprintf(bw, "-- %d Kbytes in %d Request%s.\n", (total+1023)/1024, n, map[bool]string{true: "s"}[n != 1])
	return nil
}

func oneLineReply(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// showMessage prints a message's envelope (with every recipient's state)
// and its header.
func showMessage(s *queue.Spool, id string, w io.Writer) error {
	env, err := s.Load(id)
	if err != nil {
		return fmt.Errorf("%w: %s", queue.ErrNoMessage, id)
	}
	b, _ := json.MarshalIndent(env, "", "  ")
	fmt.Fprintf(w, "%s\n\n", b)
	f, err := s.OpenBody(env)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		l := strings.TrimRight(sc.Text(), "\r")
		if l == "" {
			break
		}
		fmt.Fprintln(w, l)
	}
	return nil
}

func slogDiscard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
