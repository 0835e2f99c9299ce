package smtp_test

import (
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// A session cannot live forever on commands that move no mail.
func TestServer_MaxJunkCommands(t *testing.T) {
	_, s, c, scanner := testServerGreeted(t, func(s *smtp.Server) { s.MaxJunkCommands = 5 })
	defer s.Close()
	defer c.Close()
	for i, cmd := range []string{"NOOP", "RSET", "VRFY x", "HELP", "NOOP"} {
		io.WriteString(c, cmd+"\r\n")
		scanner.Scan()
		if strings.HasPrefix(scanner.Text(), "421") {
			t.Fatalf("junk command %d refused: %q", i+1, scanner.Text())
		}
	}
	io.WriteString(c, "NOOP\r\n")
	scanner.Scan()
	if !strings.HasPrefix(scanner.Text(), "421 4.7.0") {
		t.Fatalf("6th junk command: %q, want 421", scanner.Text())
	}
	if scanner.Scan() {
		t.Fatalf("connection still open: %q", scanner.Text())
	}
}
