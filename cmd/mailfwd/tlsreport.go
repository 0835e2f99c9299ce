package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"mailfwd/queue"
	"mailfwd/queue/nexthop/tlsrpt"
)

// tlsReport prints, or sends to their https: rua, the TLS-RPT reports of
// one UTC day from the counts the relay keeps (delivery.tls_rpt). The
// relay sends each finished day itself, shortly after midnight UTC; this
// is for looking at a day, or for sending the day so far (-day today) to
// check a domain's reporting set-up. Run it while the relay is stopped
// (-send clears what it delivered from the counts file, which a running
// relay would overwrite, and queues mailto: reports in the spool, which a
// running relay holds locked): https: reports are POSTed at once, mailto:
// ones go out when the relay starts.
func tlsReport(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tls-report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	day := fs.String("day", "yesterday", "the UTC day: YYYY-MM-DD, yesterday, or today (the day so far)")
	send := fs.Bool("send", false, "send each report to its domain's rua instead of printing it (https: now, mailto: queued for the relay)")
	c, _, err := loadConfig(fs, args)
	if err != nil {
		return errExit{2, err.Error()}
	}
	if !c.Delivery.TLSRPT.Enabled {
		return errExit{2, "delivery.tls_rpt.enabled is false: no counts are kept"}
	}
	today := time.Now().UTC().Truncate(24 * time.Hour)
	var start time.Time
	switch *day {
	case "today":
		start = today
	case "yesterday":
		start = today.Add(-24 * time.Hour)
	default:
		if start, err = time.Parse("2006-01-02", *day); err != nil {
			return errExit{2, "-day: " + err.Error()}
		}
	}
	// The reporter sends only days that are over: for today, its clock
	// is the end of the day.
	now := time.Now
	if !start.Before(today) {
		now = func() time.Time { return start.Add(24*time.Hour + time.Second) }
	}
	path := filepath.Join(c.Path(c.SpoolDir), "tlsrpt.json")
	if _, err := os.Stat(path); err != nil {
		return errExit{1, fmt.Sprintf("no counts at %s: %v", path, err)}
	}
	rec, err := tlsrpt.OpenRecorder(tlsrpt.RecorderOptions{Path: path, Now: now, KeepDays: 400})
	if err != nil {
		return errExit{1, err.Error()}
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if !*send {
		r := c.Delivery.TLSRPT
		reports := rec.Reports(start, tlsrpt.ReportInfo{OrganizationName: r.Organization, ContactInfo: r.Contact, Submitter: c.Hostname})
		if len(reports) == 0 {
			return errExit{1, "no sessions counted on " + start.Format("2006-01-02")}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		for _, rp := range reports {
			if err := enc.Encode(rp); err != nil {
				return err
			}
		}
		return nil
	}
	roots, err := deliveryRoots(c)
	if err != nil {
		return errExit{2, err.Error()}
	}
	spool, err := queue.OpenSpool(c.Path(c.SpoolDir), log)
	if err != nil {
		return errExit{1, fmt.Sprintf("%v (is the relay running? stop it first)", err)}
	}
	defer spool.Close()
	ours := ourDomains(c)
	inject := func(_ context.Context, from, to string, msg []byte) error {
		env, err := spool.Queue(from, to, !ours(to[strings.LastIndexByte(to, '@')+1:]), msg, time.Now())
		if err == nil {
			log.Info("tls-rpt: report queued for the relay", "queue_id", env.ID, "to", to)
		}
		return err
	}
	rp, err := newReporter(c, rec, newDNS(c), roots, inject, log)
	if err != nil {
		return errExit{2, err.Error()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := rp.SendDay(ctx, start); err != nil && !errors.Is(err, tlsrpt.ErrDayNotOver) {
		return errExit{75, err.Error()}
	}
	return nil
}
