package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ciwebhook/ciwebhook"
	"github.com/ciwebhook/ciwebhook/internal/config"
	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/ledger/file"
)

const ledgerUsage = `Usage: ciwebhook ledger <command>

Reads and requeues rows of the configured ledger (LEDGER_BACKEND,
LEDGER_PATH, as the server reads them; no secret is needed):

  ciwebhook ledger list [--status S] [--limit N]   the newest rows, as a table
  ciwebhook ledger show GUID                       one row, as JSON
  ciwebhook ledger retry GUID                      post that row's message again
  ciwebhook ledger retry --failed                  post every failed row again

A requeued row is posted by the running server's worker within about a
second, or by the next start. With the sqlite backend this is safe while a
server runs; the file backend is locked by a running server, so stop it
first (or use sqlite).
`

func ledgerCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, ledgerUsage)
		return 2
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "list":
		return ledgerList(ctx, args, getenv, stdout, stderr)
	case "show":
		return ledgerShow(ctx, args, getenv, stdout, stderr)
	case "retry":
		return ledgerRetry(ctx, args, getenv, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stderr, ledgerUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "ciwebhook ledger: unknown command %q\n\n%s", sub, ledgerUsage)
		return 2
	}
}

// parseArgs parses flags and returns the positional arguments, which may
// come before or after the flags (ledger show GUID, ledger retry --failed).
func parseArgs(fs *flag.FlagSet, args []string, stderr io.Writer) (rest []string, code int, ok bool) {
	fs.SetOutput(stderr)
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0, false
			}
			return nil, 2, false
		}
		args = fs.Args()
		if len(args) == 0 {
			return rest, 0, true
		}
		rest, args = append(rest, args[0]), args[1:]
	}
}

// openLedger opens the ledger the environment configures, as the server
// does but without needing the secret. A reader (list, show) of a file
// ledger that a running server holds gets a read-only snapshot of it.
func openLedger(ctx context.Context, getenv func(string) string, reader bool) (ledger.Store, error) {
	cfg, err := config.Load(func(k string) string {
		if k == "ENABLE_WEBHOOKS" {
			return "false" // skips the secret; the ledger settings are read all the same
		}
		return getenv(k)
	})
	if err != nil {
		return nil, err
	}
	switch cfg.LedgerBackend {
	case config.BackendSQLite, config.BackendFile:
		// Opening creates a missing ledger, and an empty new one in the
		// wrong folder would only hide that the path is not the server's.
		if _, err := os.Stat(cfg.LedgerPath); err != nil {
			return nil, fmt.Errorf("no %s ledger at %s (LEDGER_PATH): run this with the server's environment and in its folder", cfg.LedgerBackend, cfg.LedgerPath)
		}
	}
	st, err := ciwebhook.OpenLedger(ctx, cfg)
	if errors.Is(err, file.ErrLocked) {
		if reader {
			return file.Snapshot(cfg.LedgerPath)
		}
		// A requeue written beside the server would never reach its
		// worker, which keeps the file ledger in memory.
		return nil, fmt.Errorf("the file ledger %s is in use by a running server: stop it to retry rows, or use the sqlite backend", cfg.LedgerPath)
	}
	return st, err
}

func ledgerList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ledger list", flag.ContinueOnError)
	status := fs.String("status", "", "only rows in this state: pending, failed, delivered, filtered or ignored")
	limit := fs.Int("limit", 50, "at most this many rows, newest first")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: ciwebhook ledger list [--status S] [--limit N]\n\nLists the newest rows of the ledger.\n\n")
		fs.PrintDefaults()
	}
	rest, code, ok := parseArgs(fs, args, stderr)
	if !ok {
		return code
	}
	state := ledger.State(strings.ToLower(*status))
	switch {
	case len(rest) > 0:
		fmt.Fprintf(stderr, "ciwebhook ledger list: unexpected argument %q\n", rest[0])
		return 2
	case state != "" && !state.Valid():
		fmt.Fprintf(stderr, "ciwebhook ledger list: --status %q is not pending, failed, delivered, filtered or ignored\n", *status)
		return 2
	case *limit < 1:
		fmt.Fprintf(stderr, "ciwebhook ledger list: --limit %d must be at least 1\n", *limit)
		return 2
	}
	st, err := openLedger(ctx, getenv, true)
	if err != nil {
		fmt.Fprintf(stderr, "ciwebhook ledger list: %v\n", err)
		return 1
	}
	defer st.Close()
	rows, err := st.List(ctx, state, *limit)
	if err != nil {
		fmt.Fprintf(stderr, "ciwebhook ledger list: %v\n", err)
		return 1
	}
	if len(rows) == 0 {
		fmt.Fprintln(stderr, "ciwebhook ledger list: no deliveries")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RECEIVED_AT\tGUID\tEVENT\tACTION\tREPO\tREF\tSTATE\tDESTINATION\tATTEMPTS\tLAST_ERROR")
	for _, d := range rows {
		dest := d.Destination // a route's name; "-" is the default destination
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n",
			d.ReceivedAt.UTC().Format(time.RFC3339), d.GUID, cell(d.Event, 0), cell(d.Action, 0),
			cell(d.Repo, 0), cell(d.Ref, 0), d.State, cell(dest, 0), d.Attempts, cell(d.LastError, 60))
	}
	if err := tw.Flush(); err != nil {
		fmt.Fprintf(stderr, "ciwebhook ledger list: %v\n", err)
		return 1
	}
	return 0
}

// cell makes a value fit one table cell: "-" when empty, on one line, and
// cut to max runes (0: no limit) with an ellipsis.
func cell(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ") // tabs and newlines would break the table
	if s == "" {
		return "-"
	}
	if r := []rune(s); max > 0 && len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}

// shownRow is a row as ledger show prints it: the message as the JSON it
// is, not base64. The outer Message hides the embedded one.
type shownRow struct {
	ledger.Delivery
	Message json.RawMessage `json:"message,omitempty"`
}

func ledgerShow(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ledger show", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: ciwebhook ledger show GUID\n\nPrints one row of the ledger as JSON, its Slack message included.\n")
	}
	rest, code, ok := parseArgs(fs, args, stderr)
	if !ok {
		return code
	}
	if len(rest) != 1 {
		fmt.Fprintln(stderr, "ciwebhook ledger show: give exactly one delivery GUID")
		return 2
	}
	st, err := openLedger(ctx, getenv, true)
	if err != nil {
		fmt.Fprintf(stderr, "ciwebhook ledger show: %v\n", err)
		return 1
	}
	defer st.Close()
	d, err := st.Get(ctx, rest[0])
	if errors.Is(err, ledger.ErrNotFound) {
		fmt.Fprintf(stderr, "ciwebhook ledger show: no delivery %q in the ledger\n", rest[0])
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "ciwebhook ledger show: %v\n", err)
		return 1
	}
	row := shownRow{Delivery: d}
	if len(d.Message) > 0 {
		row.Message = d.Message
		if !json.Valid(d.Message) {
			// Shown as text, so a damaged row can still be looked at.
			row.Message, _ = json.Marshal(string(d.Message))
		}
	}
	out, err := json.MarshalIndent(row, "", "  ")
	if err != nil {
		fmt.Fprintf(stderr, "ciwebhook ledger show: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s\n", out)
	return 0
}

func ledgerRetry(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ledger retry", flag.ContinueOnError)
	failed := fs.Bool("failed", false, "requeue every failed row")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: ciwebhook ledger retry GUID
       ciwebhook ledger retry --failed

Makes a row's Slack message owed again, due now, with its attempts and last
error cleared. The running server's worker posts it within about a second
(or the next start does). A delivered row is posted again; a filtered or
ignored row has no message to post.

`)
		fs.PrintDefaults()
	}
	rest, code, ok := parseArgs(fs, args, stderr)
	if !ok {
		return code
	}
	if *failed == (len(rest) == 1) || len(rest) > 1 {
		fmt.Fprintln(stderr, "ciwebhook ledger retry: give one delivery GUID or --failed")
		return 2
	}
	st, err := openLedger(ctx, getenv, false)
	if err != nil {
		fmt.Fprintf(stderr, "ciwebhook ledger retry: %v\n", err)
		return 1
	}
	defer st.Close()

	if !*failed {
		guid := rest[0]
		d, err := st.Get(ctx, guid)
		if err == nil {
			err = st.Requeue(ctx, guid)
		}
		switch {
		case errors.Is(err, ledger.ErrNotFound):
			fmt.Fprintf(stderr, "ciwebhook ledger retry: no delivery %q in the ledger\n", guid)
			return 1
		case errors.Is(err, ledger.ErrNothingToPost):
			fmt.Fprintf(stderr, "ciwebhook ledger retry: delivery %s is %s: it has no Slack message to post\n", guid, d.State)
			return 1
		case err != nil:
			fmt.Fprintf(stderr, "ciwebhook ledger retry: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "requeued %s (was %s after %d attempts)\n", guid, d.State, d.Attempts)
		return 0
	}

	// Page through the failed rows until none is left. A row requeued here
	// leaves the failed state; one the worker fails again at once (Slack
	// still refusing) would come back, so each row is requeued only once.
	done, requeued := map[string]bool{}, 0
	for {
		rows, err := st.List(ctx, ledger.Failed, 500)
		if err != nil {
			fmt.Fprintf(stderr, "ciwebhook ledger retry: %v\n", err)
			return 1
		}
		progress := false
		for _, d := range rows {
			if done[d.GUID] {
				continue
			}
			done[d.GUID], progress = true, true
			switch err := st.Requeue(ctx, d.GUID); {
			case errors.Is(err, ledger.ErrNotFound):
				continue // pruned meanwhile: nothing left to retry
			case err != nil:
				fmt.Fprintf(stderr, "ciwebhook ledger retry: %s: %v\n", d.GUID, err)
				return 1
			}
			requeued++
			fmt.Fprintf(stdout, "requeued %s\n", d.GUID)
		}
		if !progress {
			break
		}
	}
	fmt.Fprintf(stdout, "requeued %d failed deliveries\n", requeued)
	return 0
}
