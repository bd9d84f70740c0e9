package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary be the server process the tool starts.
func TestMain(m *testing.M) {
	if os.Getenv(serveEnv) != "" {
		services := flag.Int("services", 10, "")
		flag.Parse()
		if err := runServer(context.Background(), *services, os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The tool runs end to end on a small mesh: clients in this process, the
// server in another, every kind of event timed and the floor measured.
func TestLoadToolRuns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	o := options{services: 20, clients: 10, events: 3, fullEvents: 2, wave: 5, kinds: "flap,route,add"}
	if err := run(ctx, o, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Log(out.String())
	for _, row := range []string{"| endpoint flap | 3 |", "| route changed | 3 |", "| service added | 3 |", "| every endpoint resource changed", "| floor: the same bytes, pre-serialized | 2 |", "| the same, from the end of the translation | 2 |", "KiB per proxy", "full push / floor"} {
		if !strings.Contains(out.String(), row) {
			t.Errorf("the report lacks %q", row)
		}
	}
}
