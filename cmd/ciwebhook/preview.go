package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/ciwebhook/ciwebhook"
	"github.com/ciwebhook/ciwebhook/internal/config"
	"github.com/ciwebhook/ciwebhook/internal/event"
	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/notify"
	routepkg "github.com/ciwebhook/ciwebhook/internal/route"
	"github.com/ciwebhook/ciwebhook/internal/slack"
)

func preview(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("preview", flag.ContinueOnError)
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
	dry, code, ok := decideFromFile(fs, args, stderr)
	if !ok {
		return code
	}
	if dry.decision.State != ledger.Pending {
		fmt.Fprintf(stdout, "no message: %s (%s)\n", dry.decision.State, dry.decision.Reason)
		return 0
	}
	return printMessage(stdout, stderr, fs.Name(), *dry.summary.Note)
}

func route(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("route", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: ciwebhook route --event E --file F

Prints which of CONFIG_FILE's routes a payload matches, which of them take
it (the first match, and the next ones while a route says continue: true),
and the message each destination would get. The routes, filters and
SLACK_WEBHOOK_URL are read from the environment as the server reads them;
nothing is recorded or sent.

`)
		fs.PrintDefaults()
	}
	dry, code, ok := decideFromFile(fs, args, stderr)
	if !ok {
		return code
	}
	if len(dry.routes) == 0 {
		fmt.Fprintln(stdout, "no routes: CONFIG_FILE is not set, so every message goes to SLACK_WEBHOOK_URL (or the log)")
	}
	s := dry.summary
	takes := map[string]bool{}
	for _, d := range dry.decision.Destinations {
		takes[d] = true
	}
	subject := notify.RouteSubject(&s)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, r := range dry.routes {
		kind := "webhook"
		if r.Channel != "" {
			kind = "channel " + r.Channel
		}
		matches := len(routepkg.Match([]routepkg.Route{r}, subject)) > 0
		var verdict string
		switch {
		case takes[r.Name]:
			verdict = "takes it"
		case !matches:
			verdict = "does not match"
		case s.Note != nil && s.Note.Interim && r.Channel == "":
			verdict = "matches, but a run on its way is posted only to channel routes"
		case dry.decision.State != ledger.Pending:
			verdict = "matches, but there is nothing to post"
		default:
			verdict = "matches, but is not reached (an earlier route took it without continue: true)"
		}
		fmt.Fprintf(tw, "%s:%d\t%s\t%s\t%s\n", dry.file, r.Line, r.Name, kind, verdict)
	}
	tw.Flush()
	if dry.decision.State != ledger.Pending {
		fmt.Fprintf(stdout, "no message: %s (%s)\n", dry.decision.State, dry.decision.Reason)
		return 0
	}
	for _, d := range dry.decision.Destinations {
		name := d
		if name == "" {
			name = "SLACK_WEBHOOK_URL (no route takes it)"
			if len(dry.routes) == 0 {
				name = "the default destination"
			}
		}
		fmt.Fprintf(stdout, "\nmessage for %s:\n", name)
		if code := printMessage(stdout, stderr, fs.Name(), *s.Note); code != 0 {
			return code
		}
	}
	return 0
}

// dryRun is what the server would decide about one payload.
type dryRun struct {
	file     string
	routes   []routepkg.Route
	summary  event.Summary
	decision notify.Decision
}

// decideFromFile reads --event and --file, the settings (without the
// secret, which a dry run does not need) and CONFIG_FILE, and decides as
// the server would, without a ledger: a check suite's counts and a
// changes-mode judgement need the server's history, so they are left out.
func decideFromFile(fs *flag.FlagSet, args []string, stderr io.Writer) (dryRun, int, bool) {
	eventName := fs.String("event", "", "the X-GitHub-Event name (workflow_run, check_suite, check_run, pull_request, status, ...)")
	path := fs.String("file", "", "the payload, a JSON file (- for standard input)")
	if code, ok := parse(fs, args, stderr); !ok {
		return dryRun{}, code, false
	}
	fail := func(format string, a ...any) (dryRun, int, bool) {
		fmt.Fprintf(stderr, "ciwebhook %s: %s\n", fs.Name(), fmt.Sprintf(format, a...))
		return dryRun{}, 1, false
	}
	if *eventName == "" || *path == "" {
		fmt.Fprintf(stderr, "ciwebhook %s: --event and --file are required\n", fs.Name())
		return dryRun{}, 2, false
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
		return fail("%v", err)
	}
	getenv := func(k string) string {
		if k == "ENABLE_WEBHOOKS" {
			return "false" // a disabled service's settings skip the secret
		}
		return os.Getenv(k)
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return fail("%v", err)
	}
	routes, err := ciwebhook.DryRunRoutes(cfg, getenv)
	if err != nil {
		return fail("%v", err)
	}
	if !json.Valid(body) {
		return fail("the file is not JSON")
	}
	s, err := event.Summarize(*eventName, body, event.Options{NotifyPending: cfg.NotifyPending})
	if err != nil {
		return fail("%v", err)
	}
	filters := ciwebhook.Filters(cfg)
	filters.Routes, filters.Fallback = routes, cfg.SlackWebhookURL != ""
	d, err := notify.New(filters, nil).Decide(context.Background(), &s)
	if err != nil {
		return fail("%v", err)
	}
	return dryRun{file: cfg.ConfigFile, routes: routes, summary: s, decision: d}, 0, true
}

// printMessage prints the message as Slack would be sent it: with < and >
// as they are, not as \u003c, so that a reader sees the links.
func printMessage(stdout, stderr io.Writer, cmd string, n event.Notification) int {
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(slack.Render(n)); err != nil {
		fmt.Fprintf(stderr, "ciwebhook %s: %v\n", cmd, err)
		return 1
	}
	return 0
}
