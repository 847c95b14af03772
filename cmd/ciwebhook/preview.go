package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/ciwebhook/ciwebhook"
	"github.com/ciwebhook/ciwebhook/internal/config"
	"github.com/ciwebhook/ciwebhook/internal/event"
	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/notify"
	"github.com/ciwebhook/ciwebhook/internal/slack"
)

func preview(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("preview", flag.ContinueOnError)
	eventName := fs.String("event", "", "the X-GitHub-Event name (workflow_run, check_suite, check_run, pull_request, status, ...)")
	path := fs.String("file", "", "the payload, a JSON file (- for standard input)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: ciwebhook preview --event E --file F

Prints the Slack message (Block Kit JSON) that ciwebhook would post for the
payload, or why it would post none. The filters and NOTIFY_PENDING are read
from the environment as the server reads them; nothing is recorded or sent.
A check suite's counts come from the check runs the server has seen, so a
preview shows none.

`)
		fs.PrintDefaults()
	}
	if code, ok := parse(fs, args, stderr); !ok {
		return code
	}
	if *eventName == "" || *path == "" {
		fmt.Fprintln(stderr, "ciwebhook preview: --event and --file are required")
		return 2
	}
	var (
		body []byte
		err  error
	)
	if *path == "-" {
		body, err = io.ReadAll(os.Stdin)
	} else {
		body, err = os.ReadFile(*path)
	}
	if err != nil {
		fmt.Fprintf(stderr, "ciwebhook preview: %v\n", err)
		return 1
	}
	// A preview needs the filters but no secret: read the settings as a
	// disabled service would, which skips the secret.
	cfg, err := config.Load(func(k string) string {
		if k == "ENABLE_WEBHOOKS" {
			return "false"
		}
		return os.Getenv(k)
	})
	if err != nil {
		fmt.Fprintf(stderr, "ciwebhook preview: %v\n", err)
		return 1
	}
	if !json.Valid(body) {
		fmt.Fprintln(stderr, "ciwebhook preview: the file is not JSON")
		return 1
	}
	s, err := event.Summarize(*eventName, body, event.Options{NotifyPending: cfg.NotifyPending})
	if err != nil {
		fmt.Fprintf(stderr, "ciwebhook preview: %v\n", err)
		return 1
	}
	d, err := notify.New(ciwebhook.Filters(cfg), nil).Decide(context.Background(), &s)
	if err != nil {
		fmt.Fprintf(stderr, "ciwebhook preview: %v\n", err)
		return 1
	}
	if d.State != ledger.Pending {
		fmt.Fprintf(stdout, "no message: %s (%s)\n", d.State, d.Reason)
		return 0
	}
	out, err := json.MarshalIndent(slack.Render(*s.Note), "", "  ")
	if err != nil {
		fmt.Fprintf(stderr, "ciwebhook preview: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s\n", out)
	return 0
}
