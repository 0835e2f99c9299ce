package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// health asks a running relay's admin listener whether it is healthy: the
// container HEALTHCHECK (the image has no curl). Exit 0 healthy, 1 not.
func health(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	url := fs.String("url", "http://127.0.0.1:9925/healthz", "the relay's /healthz (admin_listen)")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return errExit{2, err.Error()}
	}
	c := &http.Client{Timeout: *timeout}
	resp, err := c.Get(*url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("unhealthy (%s): %s", resp.Status, body)
	}
	fmt.Fprintf(stdout, "%s", body)
	return nil
}
