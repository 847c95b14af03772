package slack

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ciwebhook/ciwebhook/internal/event"
)

var update = flag.Bool("update", false, "rewrite golden files")

const (
	repo = "octo-org/octo-repo"
	sha  = "3484a3f0c6f3a3ab7b4e0e6c3f8b8d1b8e5a1c2d"
)

// goldenCases is one message per case that notifies; the golden files are
// what a reviewer reads to judge the wording.
var goldenCases = []struct {
	name string
	n    event.Notification
}{
	{"workflow_run_success", event.Notification{
		Kind: "workflow_run", Outcome: event.Success, Title: "CI", Repo: repo, Branch: "main",
		Actor: "octocat", SHA: sha, Number: 164, Detail: "Add PostgreSQL ledger backend",
		Duration: 38 * time.Second, URL: "https://github.com/octo-org/octo-repo/actions/runs/30433642",
	}},
	{"workflow_run_failure", event.Notification{
		Kind: "workflow_run", Outcome: event.Failure, Title: "CI", Repo: repo, Branch: "main",
		Actor: "octocat", SHA: sha, Number: 163, Detail: "Fix flaky ledger test",
		Duration: 4*time.Minute + 12*time.Second, URL: "https://github.com/octo-org/octo-repo/actions/runs/30433641",
	}},
	{"workflow_run_cancelled", event.Notification{
		Kind: "workflow_run", Outcome: event.Cancelled, Title: "Deploy", Repo: repo, Branch: "release/1.4",
		Actor: "hubot", SHA: sha, Number: 88, Detail: "Bump version to 1.4.2",
		Duration: time.Hour + 2*time.Minute + 5*time.Second, URL: "https://github.com/octo-org/octo-repo/actions/runs/30433650",
	}},
	{"workflow_run_skipped", event.Notification{
		Kind: "workflow_run", Outcome: event.Skipped, Title: "Nightly", Repo: repo, Branch: "main",
		Actor: "octocat", SHA: sha, Number: 12, URL: "https://github.com/octo-org/octo-repo/actions/runs/30433660",
	}},
	{"check_suite_failure", event.Notification{
		Kind: "check_suite", Outcome: event.Failure, Title: "Buildkite", Repo: repo, Branch: "feature/pg",
		Actor: "octocat", SHA: sha, Detail: "Add PostgreSQL ledger backend",
		URL:    "https://github.com/octo-org/octo-repo/commit/3484a3f0c6f3a3ab7b4e0e6c3f8b8d1b8e5a1c2d/checks",
		Counts: map[event.Outcome]int{event.Success: 3, event.Failure: 2, event.Skipped: 1, event.TimedOut: 1},
		Failed: []string{"lint", "test (ubuntu-latest, 1.26)", "e2e"},
	}},
	{"check_run_failure", event.Notification{
		Kind: "check_run", Outcome: event.Failure, Title: "lint", Repo: repo, Branch: "feature/pg",
		Actor: "octocat", SHA: sha, Detail: "golangci-lint: 3 issues",
		URL: "https://github.com/octo-org/octo-repo/runs/4",
	}},
	{"pull_request_opened", event.Notification{
		Kind: "pull_request", Outcome: event.Opened, Title: "Add PostgreSQL ledger", Repo: repo, Branch: "main",
		Actor: "octocat", SHA: sha, Number: 42, Base: "main", Head: "feature/pg",
		URL: "https://github.com/octo-org/octo-repo/pull/42",
	}},
	{"pull_request_synchronize", event.Notification{
		Kind: "pull_request", Outcome: event.Synchronized, Title: "Add PostgreSQL ledger", Repo: repo, Branch: "main",
		Actor: "octocat", SHA: sha, Number: 42, Base: "main", Head: "feature/pg",
		URL: "https://github.com/octo-org/octo-repo/pull/42",
	}},
	{"pull_request_merged", event.Notification{
		Kind: "pull_request", Outcome: event.Merged, Title: "Add PostgreSQL ledger", Repo: repo, Branch: "main",
		Actor: "octocat", SHA: sha, Number: 42, Base: "main", Head: "feature/pg",
		URL: "https://github.com/octo-org/octo-repo/pull/42",
	}},
	{"pull_request_closed", event.Notification{
		Kind: "pull_request", Outcome: event.Closed, Title: "Try SQLite WAL mode", Repo: repo, Branch: "main",
		Actor: "hubot", SHA: sha, Number: 41, Base: "main", Head: "hubot:wal",
		URL: "https://github.com/octo-org/octo-repo/pull/41",
	}},
	{"status_success", event.Notification{
		Kind: "status", Outcome: event.Success, Title: "ci/circleci: build", Repo: repo, Branch: "main",
		Actor: "octocat", SHA: sha, Detail: "Your tests passed on CircleCI!",
		URL: "https://circleci.com/gh/octo-org/octo-repo/1234",
	}},
	{"status_failure", event.Notification{
		Kind: "status", Outcome: event.Failure, Title: "continuous-integration/jenkins", Repo: repo, Branch: "main",
		Actor: "octocat", SHA: sha, Detail: "The build errored: agent lost",
		URL: "https://ci.example.com/job/octo-repo/1235/",
	}},
	{"status_pending", event.Notification{
		Kind: "status", Outcome: event.Pending, Title: "security/snyk", Repo: repo, Branch: "main",
		Actor: "octocat", SHA: sha, Detail: "Waiting for status to be reported",
	}},
	{"workflow_run_failure_jobs", event.Notification{
		Kind: "workflow_run", Outcome: event.Failure, Title: "CI", Repo: repo, Branch: "main",
		Actor: "octocat", SHA: sha, Number: 165, Detail: "Add workflow_job support",
		Duration: 6*time.Minute + 3*time.Second, URL: "https://github.com/octo-org/octo-repo/actions/runs/30433670",
		Jobs: []event.Job{
			{Name: "test (ubuntu-latest, 1.26)", Step: "Run go test ./...", Duration: 4*time.Minute + 50*time.Second,
				URL: "https://github.com/octo-org/octo-repo/actions/runs/30433670/job/1"},
			{Name: "lint", Step: "golangci-lint", Duration: 41 * time.Second,
				URL: "https://github.com/octo-org/octo-repo/actions/runs/30433670/job/2"},
		},
		MoreJobs: 2,
		Mentions: []string{"U0123ABC", "W0456DEF"},
	}},
	{"workflow_run_fixed", event.Notification{
		Kind: "workflow_run", Outcome: event.Success, Change: "fixed", Title: "CI", Repo: repo, Branch: "main",
		Actor: "octocat", SHA: sha, Number: 168, Detail: "Fix the flaky test for good",
		Duration: 3*time.Minute + 2*time.Second, URL: "https://github.com/octo-org/octo-repo/actions/runs/30433680",
		BrokenFor: 2*time.Hour + 14*time.Minute, BrokenRuns: 3,
	}},
}

func marshalIndent(t testing.TB, m Message) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // goldens are read by people
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		t.Fatalf("encode: %v", err)
	}
	return b.Bytes()
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			m := Render(tc.n)
			checkMessage(t, m)
			got := marshalIndent(t, m)
			path := filepath.Join("testdata", tc.name+".golden.json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Render differs from %s (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", path, got, want)
			}
		})
	}
}

// TestRenderShape pins down what the goldens show, so a rewrite with -update
// cannot quietly lose it.
func TestRenderShape(t *testing.T) {
	tests := []struct {
		name    string
		n       event.Notification
		section string
		context string
		text    string
	}{
		{
			name:    "workflow run failure",
			n:       goldenCases[1].n,
			section: "❌ *CI failed on main — octo-org/octo-repo run #163*",
			context: `"Fix flaky ledger test" · 3484a3f · octocat · 4m 12s · <https://github.com/octo-org/octo-repo/actions/runs/30433641|View run>`,
			text:    "❌ CI failed on main — octo-org/octo-repo run #163",
		},
		{
			name:    "pull request merged",
			n:       goldenCases[8].n,
			section: "✅ *#42 Add PostgreSQL ledger merged by octocat*",
			context: "octo-org/octo-repo · main ← feature/pg · 3484a3f · <https://github.com/octo-org/octo-repo/pull/42|View pull request>",
			text:    "✅ #42 Add PostgreSQL ledger merged by octocat — octo-org/octo-repo · main ← feature/pg",
		},
		{
			name:    "everything optional missing",
			n:       event.Notification{Kind: "workflow_run", Outcome: event.Success, Title: "CI", Repo: repo},
			section: "✅ *CI passed — octo-org/octo-repo*",
			text:    "✅ CI passed — octo-org/octo-repo",
		},
		{
			name:    "no repo, run number only",
			n:       event.Notification{Kind: "workflow_run", Outcome: event.Failure, Title: "CI", Number: 7, Actor: "octocat"},
			section: "❌ *CI failed — run #7*",
			context: "octocat",
			text:    "❌ CI failed — run #7",
		},
		{
			name:    "status without URL has no link",
			n:       event.Notification{Kind: "status", Outcome: event.Failure, Title: "ci/jenkins", Repo: repo, Branch: "main", SHA: "abc"},
			section: "❌ *ci/jenkins failed on main — octo-org/octo-repo*",
			context: "abc",
			text:    "❌ ci/jenkins failed on main — octo-org/octo-repo",
		},
		{
			name:    "check run",
			n:       goldenCases[5].n,
			section: "❌ *Check lint failed on feature/pg — octo-org/octo-repo*",
			context: "golangci-lint: 3 issues · 3484a3f · octocat · <https://github.com/octo-org/octo-repo/runs/4|View check>",
			text:    "❌ Check lint failed on feature/pg — octo-org/octo-repo",
		},
		{
			name: "check suite counts and failed names",
			n: event.Notification{
				Kind: "check_suite", Outcome: event.Failure, Title: "GitHub Actions", Repo: repo, Branch: "main",
				Counts: map[event.Outcome]int{event.Success: 3, event.Failure: 1, event.Skipped: 1, event.Neutral: 0},
				Failed: []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"},
			},
			section: "❌ *GitHub Actions checks failed on main — octo-org/octo-repo*\n3 passed · 1 failed · 1 skipped\nFailed: a, b, c, d, e, f, g, h, i, j and 2 more",
			text:    "❌ GitHub Actions checks failed on main — octo-org/octo-repo",
		},
		{
			name:    "pull request without number or actor",
			n:       event.Notification{Kind: "pull_request", Outcome: event.Closed, Repo: repo, Head: "x"},
			section: "⚪ *Pull request closed*",
			context: "octo-org/octo-repo · ← x",
			text:    "⚪ Pull request closed — octo-org/octo-repo · ← x",
		},
		{
			name:    "unknown outcome",
			n:       event.Notification{Kind: "workflow_run", Outcome: "startup_failure", Title: "CI", Repo: repo},
			section: "ℹ️ *CI startup failure — octo-org/octo-repo*",
			text:    "ℹ️ CI startup failure — octo-org/octo-repo",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Render(tt.n)
			checkMessage(t, m)
			if got := m.Blocks[0].Text.Text; got != tt.section {
				t.Errorf("section:\n got %q\nwant %q", got, tt.section)
			}
			var ctx string
			if len(m.Blocks) > 1 {
				ctx = m.Blocks[1].Elements[0].Text
			}
			if ctx != tt.context {
				t.Errorf("context:\n got %q\nwant %q", ctx, tt.context)
			}
			if m.Text != tt.text {
				t.Errorf("text:\n got %q\nwant %q", m.Text, tt.text)
			}
		})
	}
}

// Routine endings must not be mistaken for failures at a glance.
func TestRenderRoutineIsNotRed(t *testing.T) {
	red := []string{"❌", "🔴", "🛑", "failed", ":x:", "🚨"}
	for _, o := range []event.Outcome{event.Cancelled, event.Skipped, event.Neutral, event.Stale, event.Closed} {
		for _, kind := range []string{"workflow_run", "check_suite", "check_run", "status", "pull_request"} {
			m := Render(event.Notification{Kind: kind, Outcome: o, Title: "CI", Repo: repo})
			out := string(marshalIndent(t, m))
			for _, r := range red {
				if strings.Contains(out, r) {
					t.Errorf("%s %s renders %q:\n%s", kind, o, r, out)
				}
			}
		}
	}
}

func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                              "",
		-time.Second:                   "",
		400 * time.Millisecond:         "",
		38 * time.Second:               "38s",
		4*time.Minute + 12*time.Second: "4m 12s",
		5 * time.Minute:                "5m",
		time.Hour + 2*time.Minute + 59*time.Second: "1h 3m",
		2 * time.Hour: "2h",
	} {
		if got := duration(d); got != want {
			t.Errorf("duration(%v) = %q, want %q", d, got, want)
		}
	}
}

// Tokens of every shape the brief names; built by concatenation so this
// file does not itself look like it leaks credentials.
var tokens = []string{
	"ghp_" + strings.Repeat("A1b2", 9),
	"gho_" + strings.Repeat("Z9y8", 9),
	"ghu_" + strings.Repeat("q7W6", 9),
	"ghs_" + strings.Repeat("0000", 9),
	"ghr_" + strings.Repeat("abcd", 9),
	"github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
	"xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
	"xoxp-" + "1-2-3-abc",
	"AKIA" + "IOSFODNN7EXAMPLE",
}

func TestRedact(t *testing.T) {
	for _, tok := range tokens {
		in := "leaked " + tok + " here"
		if got, want := redact(in), "leaked [redacted] here"; got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"clone https://user:secret@example.com/x":     "clone https://[redacted]@example.com/x",
		"https://user:p@ss@example.com/x?y=a@b":       "https://[redacted]@example.com/x?y=a@b",
		"git+ssh://git:tok@github.com/o/r":            "git+ssh://[redacted]@github.com/o/r",
		"https://github.com/o/r mail me at a@b.com":   "https://github.com/o/r mail me at a@b.com",
		"ghp_tooshort and AKIAlowercase0000000000000": "ghp_tooshort and AKIAlowercase0000000000000",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestClip(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"abcdef", 4, "abc…"},
		{"ab &amp; cd", 5, "ab…"}, // would cut inside &amp;
		{"ab &amp; cd", 9, "ab &amp;…"},
		{"x <https://a.example/b|View run>", 20, "x…"}, // would cut inside the link
		{"a 👍🏽 b", 5, "a 👍🏽…"},
		{"a 👍🏽 b", 4, "a…"},  // the skin tone stays with its thumb
		{"é̃tude", 3, "é̃…"}, // combining marks stay with their letter
		{"👩‍💻👩‍💻", 3, "…"},   // a ZWJ sequence is one picture
	}
	for _, tt := range tests {
		got := clip(tt.in, tt.max)
		if got != tt.want {
			t.Errorf("clip(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
		if n := utf8.RuneCountInString(got); n > tt.max {
			t.Errorf("clip(%q, %d) has %d characters", tt.in, tt.max, n)
		}
	}
}

func TestLinkURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://github.com/o/r/pull/1":        "https://github.com/o/r/pull/1",
		"HTTPS://github.com/o/r":               "https://github.com/o/r",
		"https://github.com/o/r?a=1&b=2":       "https://github.com/o/r?a=1&amp;b=2",
		"https://evil.example/x|click me":      "https://evil.example/x%7Cclick%20me",
		"https://evil.example/?q=a|b>c<d":      "https://evil.example/?q=a%7Cb%3Ec%3Cd",
		"https://user:secret@example.com/x":    "https://example.com/x",
		"https://example.com/?t=" + tokens[0]:  "https://example.com/?t=[redacted]",
		"javascript:alert(1)":                  "",
		"ftp://example.com/x":                  "",
		"//example.com/x":                      "",
		"/relative":                            "",
		"":                                     "",
		"https://" + strings.Repeat("a", 2000): "",
		"https://example.com/é":                "https://example.com/%C3%A9",
	} {
		if got := linkURL(in); got != want {
			t.Errorf("linkURL(%q) = %q, want %q", in, got, want)
		}
	}
}

var hostile = []string{
	"<!channel>",
	"<!here>",
	"<!everyone> <@U024BE7LH> <#C024BE7LR>",
	"<https://evil.example|click me>",
	"@everyone &amp; @here",
	"https://user:secret@example.com/x",
	"a > b < c & d",
	"line one\nline two\r\n\ttabbed",
	"\u202Eevil\u202C reversed",
	"\xff\xfe invalid UTF-8",
	strings.Repeat("A", 5000),
	strings.Repeat("&", 5000),
	strings.Repeat("<!channel>", 500),
	strings.Repeat("é", 299) + "👩‍👩‍👧‍👦" + strings.Repeat("👍🏽", 100),
	strings.Repeat("x", 297) + "🇫🇷🏴󠁧󠁢󠁳󠁣󠁴󠁿" + strings.Repeat("字", 3000),
}

// forbidden must not appear anywhere in the posted JSON.
var forbidden = append([]string{"<!", "<@U", "<#C", "<https://evil", "user:secret", "secret@", "\u202E"}, tokens...)

func TestRenderHostile(t *testing.T) {
	inputs := append(append([]string{}, hostile...), tokens...)
	for _, tok := range tokens {
		inputs = append(inputs, "fix: rotate "+tok+" (oops)", "https://x:"+tok+"@github.com/o/r")
	}
	for _, s := range inputs {
		for _, kind := range []string{"workflow_run", "check_suite", "check_run", "pull_request", "status", "push"} {
			n := fill(kind, event.Failure, s)
			m := Render(n)
			checkMessage(t, m)
			out := string(marshalIndent(t, m))
			for _, f := range forbidden {
				if strings.Contains(out, f) {
					t.Errorf("%s with %.40q: output contains %q:\n%.2000s", kind, s, f, out)
				}
			}
		}
	}
}

// fill puts s in every string field a GitHub payload supplies.
func fill(kind string, o event.Outcome, s string) event.Notification {
	return event.Notification{
		Kind: kind, Outcome: o, Title: s, Repo: s, Branch: s, Actor: s, SHA: s,
		URL: s, Number: 1, Detail: s, Duration: time.Minute, Base: s, Head: s,
		Counts: map[event.Outcome]int{event.Failure: 1, event.Outcome(s): 2},
		Failed: []string{s, s, s, s, s, s, s, s, s, s, s, s},
	}
}

// ourLink is a link Render builds itself: an http(s) URL with no character
// that could end it early, and a fixed label.
var ourLink = regexp.MustCompile(`<https?://[^\s<>|]+\|View [A-Za-z ]+>`)

// jobLink is a failed job's line in a run's jobs section: our link around
// an escaped job name. mention is a Slack user ID from SLACK_MENTIONS.
var (
	jobLink = regexp.MustCompile(`(?m)^• <https?://[^\s<>|]+\|[^<>\n]*>`)
	mention = regexp.MustCompile(`<@[UW][A-Z0-9]{2,}>`)
)

var entity = regexp.MustCompile(`&(amp|lt|gt);`)

// checkMessage asserts what Slack requires and what keeps hostile text
// inert, for any message Render returns.
func checkMessage(t testing.TB, m Message) {
	t.Helper()
	raw, err := json.Marshal(m)
	if err != nil || !json.Valid(raw) || !utf8.Valid(raw) {
		t.Fatalf("message does not marshal to valid UTF-8 JSON: %v", err)
	}
	checkText(t, "text", m.Text, maxFallbackText, false)
	if n := len(m.Blocks); n < 1 || n > maxBlocks {
		t.Errorf("%d blocks, want 1..%d", n, maxBlocks)
	}
	for i, b := range m.Blocks {
		switch b.Type {
		case "section":
			if b.Text == nil || b.Text.Type != "mrkdwn" || len(b.Elements) > 0 {
				t.Fatalf("block %d: malformed section %+v", i, b)
			}
			checkText(t, "section", b.Text.Text, maxSectionText, true)
		case "context":
			if n := len(b.Elements); b.Text != nil || n < 1 || n > maxContextElems {
				t.Fatalf("block %d: context with %d elements", i, n)
			}
			for _, e := range b.Elements {
				if e.Type != "mrkdwn" {
					t.Errorf("block %d: element type %q", i, e.Type)
				}
				checkText(t, "context", e.Text, maxContextText, true)
			}
		default:
			t.Errorf("block %d: unexpected type %q", i, b.Type)
		}
	}
}

func checkText(t testing.TB, where, s string, max int, links bool) {
	t.Helper()
	if s == "" {
		t.Errorf("%s: empty", where)
	}
	if !utf8.ValidString(s) {
		t.Errorf("%s: invalid UTF-8: %q", where, s)
	}
	if n := utf8.RuneCountInString(s); n > max {
		t.Errorf("%s: %d characters, limit %d", where, n, max)
	}
	if strings.Contains(s, "<!") {
		t.Errorf("%s: contains a special mention: %.300q", where, s)
	}
	if strings.ContainsAny(s, "\n\r\t") && where != "section" {
		t.Errorf("%s: not one line: %.300q", where, s)
	}
	bare := mention.ReplaceAllString(s, "")
	if links {
		bare = jobLink.ReplaceAllString(ourLink.ReplaceAllString(bare, ""), "")
	}
	if strings.ContainsAny(bare, "<>") {
		t.Errorf("%s: raw < or > outside our links: %.300q", where, s)
	}
	if strings.Count(bare, "&") != len(entity.FindAllString(bare, -1)) {
		t.Errorf("%s: & that is not an entity (cut in half?): %.300q", where, s)
	}
}

func TestLimitsForAllCases(t *testing.T) {
	for _, tc := range goldenCases {
		checkMessage(t, Render(tc.n))
	}
	long := strings.Repeat("x", 5000)
	m := Render(event.Notification{Kind: "pull_request", Outcome: event.Opened, Title: long, Repo: repo, Number: 1})
	checkMessage(t, m)
	if !strings.Contains(m.Blocks[0].Text.Text, "…") || !strings.Contains(m.Text, "…") {
		t.Errorf("a 5000-character title is not cut with an ellipsis: %+v", m)
	}
	if !strings.Contains(m.Text, repo) {
		t.Errorf("the fallback lost the repo to a long title: %q", m.Text)
	}
}

func FuzzRender(f *testing.F) {
	for _, s := range hostile {
		f.Add(uint8(0), uint8(1), s, "o/r", "main", "octocat", sha, "https://github.com/o/r", "detail", int64(38e9), 7)
	}
	f.Add(uint8(3), uint8(10), "t", "r", "b", "a", "s", "https://a|b>c", "<!here>", int64(-1), -1)
	kinds := []string{"workflow_run", "check_suite", "check_run", "pull_request", "status", "", "push"}
	outcomes := []event.Outcome{
		event.Success, event.Failure, event.TimedOut, event.Cancelled, event.Skipped, event.Neutral,
		event.ActionRequired, event.Stale, event.Pending, event.Opened, event.Reopened,
		event.ReadyForReview, event.Synchronized, event.Merged, event.Closed, "", "<!channel>",
	}
	f.Fuzz(func(t *testing.T, kind, outcome uint8, title, repo, branch, actor, sha, url, detail string, dur int64, num int) {
		n := event.Notification{
			Kind: kinds[int(kind)%len(kinds)], Outcome: outcomes[int(outcome)%len(outcomes)],
			Title: title, Repo: repo, Branch: branch, Actor: actor, SHA: sha, URL: url, Number: num,
			Detail: detail, Duration: time.Duration(dur), Base: branch, Head: title,
			Counts:   map[event.Outcome]int{event.Outcome(title): 1, event.Failure: num},
			Failed:   []string{title, detail, actor},
			Jobs:     []event.Job{{Name: title, Step: detail, URL: url, Duration: time.Duration(dur)}},
			Mentions: []string{actor, branch},
		}
		checkMessage(t, Render(n))
	})
}

// Every payload GitHub sends that notifies renders within Block Kit's limits.
func TestRenderRealPayloads(t *testing.T) {
	const dir = "../../../shared/github-payloads"
	files, err := filepath.Glob(filepath.Join(dir, "*", "*.json"))
	if err != nil || len(files) < 79 {
		t.Fatalf("found %d payloads in %s (%v), want 79", len(files), dir, err)
	}
	notes := 0
	for _, file := range files {
		body, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(filepath.Dir(file))
		s, err := event.Summarize(name, body, event.Options{NotifyPending: true})
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if s.Note == nil {
			continue
		}
		notes++
		t.Run(strings.TrimPrefix(file, dir+"/"), func(t *testing.T) { checkMessage(t, Render(*s.Note)) })
	}
	if notes < 20 {
		t.Errorf("only %d payloads notify; the corpus has more", notes)
	}
}

// TestRenderJobsAndMentions pins what the jobs section and the mentions can
// and cannot carry: GitHub text stays inert, only Slack IDs become mentions.
func TestRenderJobsAndMentions(t *testing.T) {
	n := event.Notification{
		Kind: "workflow_run", Outcome: event.Failure, Title: "CI", Repo: repo, Branch: "main", Actor: "<!channel>",
		Jobs: []event.Job{
			{Name: "build <!here>", Step: "Run <@U999> ghp_0123456789abcdef0123456789abcdef0123", Duration: 90 * time.Second,
				URL: "https://github.com/o/r/actions/runs/1/job/2?a=b|c>d"},
			{Name: "b"}, {Name: "c"}, {Name: "d"}, {Name: "e"}, {Name: "f"},
		},
		Mentions: []string{"U0123", "<!channel>", "u0456", "W0789"},
	}
	m := Render(n)
	if len(m.Blocks) != 3 || m.Blocks[1].Type != "section" {
		t.Fatalf("want a jobs section between the headline and the context: %+v", m.Blocks)
	}
	jobs := m.Blocks[1].Text.Text
	for _, bad := range []string{"<!here>", "<@U999>", "ghp_0123", "|c>"} {
		if strings.Contains(jobs, bad) {
			t.Errorf("jobs section carries %q: %s", bad, jobs)
		}
	}
	for _, want := range []string{"*Failed jobs*", "build &lt;!here&gt;", "1m 30s", "and 1 more", "• e"} {
		if !strings.Contains(jobs, want) {
			t.Errorf("jobs section lacks %q: %s", want, jobs)
		}
	}
	if strings.Contains(jobs, "• f") {
		t.Errorf("more than %d jobs listed: %s", event.MaxJobs, jobs)
	}
	head := m.Blocks[0].Text.Text
	if !strings.Contains(head, "cc <@U0123> <@W0789>") || strings.Contains(head, "<!channel>") || strings.Contains(head, "u0456") {
		t.Errorf("mentions: %s", head)
	}
	if !strings.HasSuffix(m.Text, "cc <@U0123> <@W0789>") {
		t.Errorf("fallback lacks the mentions: %s", m.Text)
	}
	n.Outcome, n.Jobs, n.Mentions = event.Success, nil, nil
	if m := Render(n); strings.Contains(m.Blocks[0].Text.Text, "<@") || len(m.Blocks) != 2 {
		t.Errorf("a success with no jobs or mentions: %+v", m.Blocks)
	}
}
