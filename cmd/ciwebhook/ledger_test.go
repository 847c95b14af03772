package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/event"
	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/ledger/sqlite"
	"github.com/ciwebhook/ciwebhook/internal/slack/slacktest"
)

const longError = "slack: HTTP 500: upstream connect error or disconnect/reset before headers.\nreset reason: connection termination, retried later"

// seeded returns the path of a SQLite ledger holding one row per state.
func seeded(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.db")
	st, err := sqlite.Open(context.Background(), path, 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	msg, _ := json.Marshal(event.Notification{Kind: "workflow_run", Outcome: event.Failure, Title: "CI", Repo: "octo-org/octo-repo", Branch: "main"})
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	rows := []ledger.Delivery{
		{GUID: "g-delivered", Event: "workflow_run", Action: "completed", Repo: "octo-org/octo-repo", Ref: "main", State: ledger.Pending, Message: msg},
		{GUID: "g-failed", Event: "pull_request", Action: "opened", Repo: "octo-org/octo-repo", Ref: "main", State: ledger.Pending, Message: msg},
		{GUID: "g-filtered", Event: "status", Action: "success", Repo: "octo-org/other", State: ledger.Filtered},
		{GUID: "g-pending", Event: "check_suite", Action: "completed", Repo: "octo-org/octo-repo", Ref: "release/1.2", State: ledger.Pending, Message: msg},
	}
	for i := range rows {
		rows[i].ReceivedAt = at.Add(time.Duration(i) * time.Minute)
		if _, err := st.Record(context.Background(), &rows[i]); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	if err := st.Finish(ctx, "g-delivered", ledger.Delivered, 1, ""); err != nil {
		t.Fatal(err)
	}
	if err := st.Finish(ctx, "g-failed", ledger.Failed, 3, longError); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLedgerList(t *testing.T) {
	t.Parallel()
	env := envMap("LEDGER_PATH", seeded(t))
	cases := []struct {
		name  string
		args  []string
		code  int
		guids []string // rows shown, in order
	}{
		{"all, newest first", nil, 0, []string{"g-pending", "g-filtered", "g-failed", "g-delivered"}},
		{"failed", []string{"--status", "failed"}, 0, []string{"g-failed"}},
		{"status in capitals", []string{"--status", "DELIVERED"}, 0, []string{"g-delivered"}},
		{"limit", []string{"--limit", "2"}, 0, []string{"g-pending", "g-filtered"}},
		{"no match", []string{"--status", "ignored"}, 0, nil},
		{"unknown status", []string{"--status", "lost"}, 2, nil},
		{"zero limit", []string{"--limit", "0"}, 2, nil},
		{"stray argument", []string{"g-failed"}, 2, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := runCmd(ledgerCmd, env, append([]string{"list"}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tc.code, errOut)
			}
			if code != 0 {
				return
			}
			lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
			if len(tc.guids) == 0 {
				if out != "" || !strings.Contains(errOut, "no deliveries") {
					t.Errorf("stdout %q stderr %q, want nothing listed and a note", out, errOut)
				}
				return
			}
			if len(lines) != len(tc.guids)+1 {
				t.Fatalf("%d lines, want a header and %d rows:\n%s", len(lines), len(tc.guids), out)
			}
			header := lines[0]
			for _, col := range []string{"RECEIVED_AT", "GUID", "EVENT", "ACTION", "REPO", "REF", "STATE", "DESTINATION", "ATTEMPTS", "LAST_ERROR"} {
				if !strings.Contains(header, col) {
					t.Errorf("header %q lacks %s", header, col)
				}
			}
			// Aligned: every row's GUID and STATE start under their headers.
			for i, g := range tc.guids {
				row := lines[i+1]
				if strings.Index(row, g) != strings.Index(header, "GUID") {
					t.Errorf("row %q: GUID not under its header %q", row, header)
				}
				fields := strings.Fields(row)
				state := fields[6]
				if strings.Index(row, " "+state+" ")+1 != strings.Index(header, "STATE") {
					t.Errorf("row %q: STATE not under its header %q", row, header)
				}
			}
		})
	}

	_, out, _ := runCmd(ledgerCmd, env, "list", "--status", "failed")
	row := strings.Split(strings.TrimSpace(out), "\n")[1]
	for _, want := range []string{"2026-03-01T12:01:00Z", "pull_request", "opened", "octo-org/octo-repo", "main", "failed", " 3 ", "slack: HTTP 500: upstream", "…"} {
		if !strings.Contains(row, want) {
			t.Errorf("failed row %q lacks %q", row, want)
		}
	}
	if strings.Contains(row, "retried later") {
		t.Errorf("failed row %q: last_error not truncated", row)
	}
	_, out, _ = runCmd(ledgerCmd, env, "list", "--status", "filtered")
	if row := strings.Split(strings.TrimSpace(out), "\n")[1]; !strings.Contains(row, " - ") {
		t.Errorf("filtered row %q: empty ref and last error should read -", row)
	}
}

func TestLedgerShow(t *testing.T) {
	t.Parallel()
	env := envMap("LEDGER_PATH", seeded(t))
	code, out, errOut := runCmd(ledgerCmd, env, "show", "g-failed")
	if code != 0 {
		t.Fatalf("show: exit %d, stderr %q", code, errOut)
	}
	var row map[string]any
	if err := json.Unmarshal([]byte(out), &row); err != nil {
		t.Fatalf("show printed %q, not JSON: %v", out, err)
	}
	if !strings.HasPrefix(out, "{\n  \"guid\": \"g-failed\"") {
		t.Errorf("show is not indented JSON starting with the GUID:\n%s", out)
	}
	msg, ok := row["message"].(map[string]any)
	if !ok || msg["title"] != "CI" || msg["repo"] != "octo-org/octo-repo" {
		t.Errorf("message = %#v, want the notification as a JSON object", row["message"])
	}
	if row["state"] != "failed" || row["attempts"] != 3.0 || row["last_error"] != longError || row["event"] != "pull_request" {
		t.Errorf("row %v", row)
	}
	if _, out, _ := runCmd(ledgerCmd, env, "show", "g-filtered"); strings.Contains(out, `"message"`) {
		t.Errorf("a row without a message shows one:\n%s", out)
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"show", "nope"}, 1, `no delivery "nope" in the ledger`},
		{[]string{"show"}, 2, "exactly one delivery GUID"},
		{[]string{"show", "a", "b"}, 2, "exactly one delivery GUID"},
		{[]string{"show", "--help"}, 0, "Usage: ciwebhook ledger show"},
	} {
		if code, _, errOut := runCmd(ledgerCmd, env, tc.args...); code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
}

func TestLedgerRetryRefusals(t *testing.T) {
	t.Parallel()
	env := envMap("LEDGER_PATH", seeded(t))
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"retry", "g-filtered"}, 1, "g-filtered is filtered: it has no Slack message to post"},
		{[]string{"retry", "nope"}, 1, `no delivery "nope" in the ledger`},
		{[]string{"retry"}, 2, "give one delivery GUID or --failed"},
		{[]string{"retry", "g-failed", "--failed"}, 2, "give one delivery GUID or --failed"},
		{[]string{"retry", "a", "b"}, 2, "give one delivery GUID or --failed"},
		{[]string{"retry", "--help"}, 0, "Usage: ciwebhook ledger retry"},
		{nil, 2, "Usage: ciwebhook ledger"},
		{[]string{"--help"}, 0, "Usage: ciwebhook ledger"},
		{[]string{"list", "--help"}, 0, "Usage: ciwebhook ledger list"},
		{[]string{"list", "--nope"}, 2, "nope"},
		{[]string{"frob"}, 2, `unknown command "frob"`},
	} {
		if code, _, errOut := runCmd(ledgerCmd, env, tc.args...); code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
}

// A missing ledger is an error, not a new empty ledger in the wrong place.
func TestLedgerMissing(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "data", "ledger.db")
	code, _, errOut := runCmd(ledgerCmd, envMap("LEDGER_PATH", path), "list")
	if code != 1 || !strings.Contains(errOut, "no sqlite ledger at "+path) {
		t.Errorf("exit %d, stderr %q; want 1 naming the path", code, errOut)
	}
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Errorf("the command created %s: %v", filepath.Dir(path), err)
	}
}

// show reads the state field of a row through the command, as an operator
// would, while the server holds the ledger open.
func showState(t *testing.T, env func(string) string, guid string) (string, float64) {
	t.Helper()
	code, out, errOut := runCmd(ledgerCmd, env, "show", guid)
	if code != 0 {
		return "", 0
	}
	var row struct {
		State    string
		Attempts float64
	}
	if err := json.Unmarshal([]byte(out), &row); err != nil {
		t.Fatalf("show %s: %v (%q)", guid, err, errOut)
	}
	return row.State, row.Attempts
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A row that failed is requeued by the command while a server runs on the
// same SQLite ledger, and the server's worker posts it: it polls from the
// start of the ledger, so a row the command made due is found without any
// signal between the two processes.
func TestLedgerRetryPostedByRunningServer(t *testing.T) {
	t.Parallel()
	fake := slacktest.New(t)
	fake.Script(func(int) slacktest.Reply { return slacktest.Reply{Status: 400, Body: "invalid_payload"} })
	path := filepath.Join(t.TempDir(), "ledger.db")
	addr, _ := service(t, "GITHUB_WEBHOOK_SECRET", secret, "LEDGER_PATH", path, "SLACK_WEBHOOK_URL", fake.URL())
	env := envMap("GITHUB_WEBHOOK_SECRET", secret, "ADDR", addr, "LEDGER_PATH", path)

	for i := range 3 {
		guid := fmt.Sprint("retry-", i)
		file := filepath.Join(t.TempDir(), "pr.json")
		if err := os.WriteFile(file, prOpened(t, i), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, out, errOut := runCmd(send, env, "--event", "pull_request", "--file", file, "--delivery", guid); code != 0 {
			t.Fatalf("send %s: exit %d %q %q", guid, code, out, errOut)
		}
		waitFor(t, guid+" to fail", func() bool { s, _ := showState(t, env, guid); return s == "failed" })
	}
	fake.Script(func(int) slacktest.Reply { return slacktest.Reply{Status: 200, Body: "ok"} })

	code, out, errOut := runCmd(ledgerCmd, env, "retry", "retry-0")
	if code != 0 || out != "requeued retry-0 (was failed after 1 attempts)\n" {
		t.Fatalf("retry: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	waitFor(t, "the server to post retry-0", func() bool { return len(fake.Accepted()) == 1 })
	// Slack's 200 comes before the worker records it: give the write a moment.
	waitFor(t, "retry-0 to be recorded", func() bool { s, _ := showState(t, env, "retry-0"); return s != "pending" })
	if s, n := showState(t, env, "retry-0"); s != "delivered" || n != 1 {
		t.Errorf("retry-0 after its retry: %s after %v attempts, want delivered after 1", s, n)
	}
	if got := fake.Accepted()[0].Text; !strings.Contains(got, "change 0") {
		t.Errorf("posted %q, want the message of retry-0", got)
	}

	code, out, errOut = runCmd(ledgerCmd, env, "retry", "--failed")
	if code != 0 || !strings.Contains(out, "requeued retry-1\n") || !strings.Contains(out, "requeued retry-2\n") ||
		!strings.HasSuffix(out, "requeued 2 failed deliveries\n") {
		t.Fatalf("retry --failed: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	waitFor(t, "the server to post the other two", func() bool { return len(fake.Accepted()) == 3 })
	if code, _, errOut := runCmd(ledgerCmd, env, "list", "--status", "failed"); code != 0 || !strings.Contains(errOut, "no deliveries") {
		t.Errorf("failed rows left after retry --failed: exit %d %q", code, errOut)
	}
	time.Sleep(1500 * time.Millisecond) // a poll or more: nothing is posted twice
	if n := len(fake.Posts()); n != 6 {
		t.Errorf("Slack received %d posts, want 6 (3 refused, 3 retried)", n)
	}
}

// The file backend is locked by a running server: the command says so and
// what to do, rather than a bare lock error; once the server stops, it works.
func TestLedgerFileBackendInUse(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	env := envMap("LEDGER_BACKEND", "file", "LEDGER_PATH", path)
	addr, svc := service(t, "GITHUB_WEBHOOK_SECRET", secret, "LEDGER_BACKEND", "file", "LEDGER_PATH", path)
	if code, err := post("http://"+addr, "in-use-1", prOpened(t, 7)); err != nil || code != 202 {
		t.Fatalf("delivery: %d %v", code, err)
	}

	// Reading works while the server holds the file: a snapshot.
	if code, out, errOut := runCmd(ledgerCmd, env, "list"); code != 0 || !strings.Contains(out, "in-use-1") {
		t.Errorf("list with the server running: exit %d, stdout %q, stderr %q; want the row", code, out, errOut)
	}
	if code, out, errOut := runCmd(ledgerCmd, env, "show", "in-use-1"); code != 0 || !strings.Contains(out, `"guid": "in-use-1"`) {
		t.Errorf("show with the server running: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// A requeue could not reach the server's worker: refused, clearly.
	want := "the file ledger " + path + " is in use by a running server: stop it to retry rows, or use the sqlite backend"
	for _, args := range [][]string{{"retry", "in-use-1"}, {"retry", "--failed"}} {
		code, out, errOut := runCmd(ledgerCmd, env, args...)
		if code != 1 || out != "" || !strings.Contains(errOut, want) {
			t.Errorf("%v with the server running: exit %d, stdout %q, stderr %q; want 1 and %q", args, code, out, errOut, want)
		}
	}
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCmd(ledgerCmd, env, "retry", "in-use-1"); code != 0 {
		t.Errorf("retry once the server stopped: exit %d, stderr %q", code, errOut)
	}
}

func TestDispatch(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"send", "ledger"} {
		var out, errb strings.Builder
		if code := run(context.Background(), []string{cmd, "--help"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "Usage: ciwebhook "+cmd) {
			t.Errorf("%s --help: %d %q", cmd, code, errb.String())
		}
	}
	var out, errb strings.Builder
	if code := run(context.Background(), []string{"help"}, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "ciwebhook send") || !strings.Contains(out.String(), "ciwebhook ledger") {
		t.Errorf("usage does not list send and ledger: %q", out.String())
	}
}
