package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ciwebhook/ciwebhook/internal/slack/slacktest"
)

const (
	botToken    = "xoxb-1111-2222-SECRETxTOKENxPART"
	liveChannel = "C0123456789"
)

// twoTeams writes the README's example: the API team's results to its
// webhook, everything of the organisation live in the platform channel.
func twoTeams(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "routes.yaml")
	err := os.WriteFile(path, []byte(`routes:
  - name: api-team
    repos: ["octo-org/api-*"]
    branches: ["main", "release/**"]
    webhook_url: ${API_TEAM_SLACK_URL}
    continue: true
  - name: platform-live
    repos: ["octo-org/*"]
    channel: `+liveChannel+`
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// A run of octo-org/api-gateway goes queued → completed with a restart in
// between: the platform channel has one message, posted then updated (its
// ts survived in the ledger); the API team's webhook gets the result once.
func TestRoutesAndLiveMessages(t *testing.T) {
	t.Parallel()
	api := slacktest.NewAPI(t, botToken)
	team := slacktest.New(t)
	env := []string{
		"CONFIG_FILE=" + twoTeams(t), "API_TEAM_SLACK_URL=" + team.URL(),
		"SLACK_BOT_TOKEN=" + botToken, "SLACK_API_URL=" + api.URL(), "SLACK_RATE=100",
		"LEDGER_PATH=" + filepath.Join(t.TempDir(), "ledger.db"),
	}
	rename := func(body []byte) []byte {
		return rewriteJSON(t, body, func(m map[string]any) {
			m["repository"].(map[string]any)["full_name"] = "octo-org/api-gateway"
			m["workflow_run"].(map[string]any)["head_branch"] = "main"
		})
	}
	queued := rename(readFile(t, filepath.Join(payloads, "workflow_run/requested.payload.json")))
	done := rename(readFile(t, filepath.Join(payloads, "workflow_run/completed.payload.json")))

	s := start(t, env...)
	if code, a := s.send(t, "workflow_run", "run-queued", queued); code != 202 || a["status"] != "queued" {
		t.Fatalf("requested run: %d %v", code, a)
	}
	waitFor(t, "the queued message", func() bool { return len(api.Messages(liveChannel)) == 1 })
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-s.done

	s = start(t, env...)
	if code, a := s.send(t, "workflow_run", "run-done", done); code != 202 || a["status"] != "queued" {
		t.Fatalf("completed run: %d %v", code, a)
	}
	waitFor(t, "the update and the team's post", func() bool {
		m := api.Messages(liveChannel)
		return len(m) == 1 && m[0].Updates == 1 && len(team.Accepted()) == 1
	})
	msg := api.Messages(liveChannel)[0]
	if !strings.Contains(msg.Text, "passed") || !strings.Contains(msg.Text, "octo-org/api-gateway") {
		t.Errorf("live message %q, want the passed run", msg.Text)
	}
	if posts := team.Accepted(); !strings.Contains(posts[0].Text, "passed") {
		t.Errorf("team's post %q, want the result (the queued state is for live messages only)", posts[0].Text)
	}
	h := s.health(t)
	dests, _ := h["destinations"].([]any)
	if h["slack"] != "log-only" || len(dests) != 3 {
		t.Errorf("health %v, want the default destination log-only, and three destinations", h)
	}
	if log := s.log(); strings.Contains(log, "SECRETx") || strings.Contains(log, team.URL()) {
		t.Errorf("a secret reached the log:\n%s", log)
	}
}

func TestRoutesFileMistakesStopStartup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct{ file, env, want string }{
		{"routes:\n  - name: a\n    repo: [\"x/*\"]\n    channel: C0123456789\n", "SLACK_BOT_TOKEN=" + botToken, "routes.yaml:3: "},
		{"routes:\n  - name: a\n    repos: [\"x/[\"]\n    channel: C0123456789\n", "SLACK_BOT_TOKEN=" + botToken, "routes.yaml:3: "},
		{"routes:\n  - name: a\n    repos: [\"x/*\"]\n", "SLACK_BOT_TOKEN=" + botToken, "routes.yaml:2: "},
		{"routes:\n  - name: a\n    webhook_url: ${UNSET_URL}\n", "", "UNSET_URL"},
		{"routes:\n  - name: a\n    channel: C0123456789\n", "", "needs SLACK_BOT_TOKEN"},
		{"routes: [\n", "", "routes.yaml:"},
	} {
		path := filepath.Join(dir, "routes.yaml")
		if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(binary(t), "serve")
		cmd.Env = []string{"ADDR=127.0.0.1:0", "GITHUB_WEBHOOK_SECRET=x", "CONFIG_FILE=" + path, tc.env}
		out, err := cmd.CombinedOutput()
		line := strings.TrimSpace(string(out))
		if err == nil || !strings.HasPrefix(line, "ciwebhook: CONFIG_FILE: ") || !strings.Contains(line, tc.want) || strings.Contains(line, "\n") || strings.Contains(line, "SECRETx") {
			t.Errorf("%q: exit %v, output %q; want one line starting CONFIG_FILE: and containing %q", tc.file, err, out, tc.want)
		}
	}
}

// ciwebhook route says which routes take a payload and prints the message.
func TestRouteCommand(t *testing.T) {
	t.Setenv("CONFIG_FILE", twoTeams(t))
	t.Setenv("API_TEAM_SLACK_URL", "https://hooks.slack.com/services/T0/B0/SECRETxURL")
	// A dry run needs no secret: without SLACK_BOT_TOKEN it still runs.
	var out, errb strings.Builder
	code := run(context.Background(), []string{"route", "--event", "workflow_run", "--file",
		filepath.Join(payloads, "workflow_run/completed.payload.json")}, &out, &errb)
	got := out.String()
	if code != 0 {
		t.Fatalf("route: exit %d, %s", code, errb.String())
	}
	lines := strings.Split(got, "\n")
	if !strings.Contains(lines[0], "api-team") || !strings.HasSuffix(lines[0], "does not match") ||
		!strings.Contains(lines[1], "platform-live") || !strings.HasSuffix(lines[1], "takes it") {
		t.Errorf("route lines:\n%s\nwant api-team not matching (repo), platform-live taking it", got)
	}
	if !strings.Contains(got, "message for platform-live:") || !strings.Contains(got, "<https://github.com/octo-org/octo-repo/actions/runs/289782451|View run>") {
		t.Errorf("route output:\n%s\nwant the message for platform-live", got)
	}
	if strings.Contains(got+errb.String(), "SECRETx") {
		t.Errorf("a secret in the output:\n%s", got)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rewriteJSON(t *testing.T, body []byte, edit func(map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
