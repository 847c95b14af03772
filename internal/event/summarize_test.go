package event

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSummarizeTestdata(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file, event string
		opts        Options
		want        Summary
	}{
		{
			// Name from the file, actor from actor (no triggering_actor),
			// startup_failure reads as failure, no suite means no key.
			file: "workflow_run_startup_failure.json", event: "workflow_run",
			want: Summary{
				Action: "completed", Repo: "octo-org/octo-repo", Ref: "feature/pg", Workflow: "ci.yml", WorkflowPath: ".github/workflows/ci.yml",
				Status: "completed", Conclusion: "startup_failure",
				URL:      "https://github.com/octo-org/octo-repo/actions/runs/42",
				Branches: []string{"feature/pg"}, Actor: "alice", Run: &RunInfo{Attempt: 1, Number: 7, At: time.Date(2024, 3, 1, 10, 4, 12, 0, time.UTC)},
				Note: &Notification{
					Kind: "workflow_run", Outcome: Failure, Title: "ci.yml", Repo: "octo-org/octo-repo",
					Branch: "feature/pg", Actor: "alice", SHA: "0123456789abcdef0123456789abcdef01234567",
					URL:    "https://github.com/octo-org/octo-repo/actions/runs/42",
					Number: 7, Detail: "Fix flaky ledger test", Duration: 4*time.Minute + 12*time.Second,
				},
			},
		},
		{
			// SHA falls back to the suite's; duration from started/completed.
			file: "check_run_timed_out.json", event: "check_run",
			want: Summary{
				Action: "completed", Repo: "octo-org/octo-repo", Ref: "main",
				Workflow: "integration (postgres)", Status: "completed", Conclusion: "timed_out",
				URL:      "https://github.com/octo-org/octo-repo/runs/9",
				Branches: []string{"main"}, Actor: "github-actions[bot]",
				Key: "checkfail:555", Subject: "check_suite:555", SuiteID: 555,
				Note: &Notification{
					Kind: "check_run", Outcome: TimedOut, Title: "integration (postgres)",
					Repo: "octo-org/octo-repo", Branch: "main", Actor: "github-actions[bot]",
					SHA: "89abcdef0123456789abcdef0123456789abcdef", URL: "https://github.com/octo-org/octo-repo/runs/9",
					Duration: 30 * time.Minute, Live: "suite:octo-org/octo-repo:555",
				},
			},
		},
		{
			// Merged from a fork: merged_by is the actor, head is owner:branch,
			// the title is trimmed but otherwise verbatim.
			file: "pull_request_merged_fork.json", event: "pull_request",
			want: Summary{
				Action: "closed", Repo: "octo-org/octo-repo", Ref: "main", Status: "closed", Conclusion: "merged",
				URL: "https://github.com/octo-org/octo-repo/pull/42", Branches: []string{"main"}, Actor: "octocat",
				Subject: "pr:octo-org/octo-repo#42",
				Note: &Notification{
					Kind: "pull_request", Outcome: Merged, Title: "Add PostgreSQL ledger <!channel>",
					Repo: "octo-org/octo-repo", Actor: "octocat", SHA: "2222222222222222222222222222222222222222",
					URL: "https://github.com/octo-org/octo-repo/pull/42", Number: 42, Author: "contributor",
					Base: "main", Head: "contributor:feature/pg", Parent: "pr:octo-org/octo-repo#42",
				},
			},
		},
		{
			// error is a failure; the key lowercases the repo only.
			file: "status_error.json", event: "status",
			want: Summary{
				Repo: "Octo-Org/Octo-Repo", Ref: "release/1.x", Workflow: "ci/jenkins: build",
				Status: "error", Conclusion: "error", URL: "https://ci.example.com/job/1",
				Branches: []string{"release/1.x", "main"}, Actor: "jenkins",
				Key: "status:octo-org/octo-repo:3333333333333333333333333333333333333333:ci/jenkins: build:error",
				Note: &Notification{
					Kind: "status", Outcome: Failure, Title: "ci/jenkins: build", Repo: "Octo-Org/Octo-Repo",
					Branch: "release/1.x", Actor: "jenkins", SHA: "3333333333333333333333333333333333333333",
					URL: "https://ci.example.com/job/1", Detail: "Build could not start",
					Live: "status:octo-org/octo-repo:3333333333333333333333333333333333333333:ci/jenkins: build",
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			got, err := Summarize(tt.event, readTestdata(t, tt.file), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			assertSummary(t, got, tt.want)
		})
	}
}

func TestWorkflowRunConclusions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		conclusion any
		want       Outcome
	}{
		{"success", Success},
		{"failure", Failure},
		{"timed_out", TimedOut},
		{"cancelled", Cancelled},
		{"skipped", Skipped},
		{"neutral", Neutral},
		{"action_required", ActionRequired},
		{"stale", Stale},
		{"startup_failure", Failure},
		{"", Neutral},
		{"something_new", Neutral},
		{nil, Neutral}, // field absent
	}
	for _, tt := range tests {
		t.Run(string(tt.want)+"/"+toString(tt.conclusion), func(t *testing.T) {
			t.Parallel()
			body := variant(t, "workflow_run/completed.payload.json", map[string]any{"workflow_run.conclusion": tt.conclusion})
			s, err := Summarize("workflow_run", body, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if s.Note == nil {
				t.Fatal("no Note")
			}
			if s.Note.Outcome != tt.want {
				t.Errorf("Outcome = %q, want %q", s.Note.Outcome, tt.want)
			}
		})
	}
}

func toString(v any) string {
	if v == nil {
		return "absent"
	}
	return v.(string)
}

func TestWorkflowRunNameAndActor(t *testing.T) {
	t.Parallel()
	const file = "workflow_run/completed.payload.json"
	tests := []struct {
		name                string
		set                 map[string]any
		wantTitle, wantActr string
	}{
		{"run name wins", map[string]any{"workflow_run.name": " CI "}, "CI", "Codertocat"},
		{"workflow object", nil, "test", "Codertocat"},
		{"file name", map[string]any{"workflow": nil}, "test.yml", "Codertocat"},
		{"display title", map[string]any{"workflow": nil, "workflow_run.path": ""},
			"ci(action): update actions/setup-node digest to 8c91899", "Codertocat"},
		{"triggering actor", map[string]any{
			"workflow_run.triggering_actor": map[string]any{"login": "rerunner"},
			"workflow_run.actor":            map[string]any{"login": "author"},
			"sender":                        map[string]any{"login": "sender"},
		}, "test", "rerunner"},
		{"actor", map[string]any{
			"workflow_run.triggering_actor": nil,
			"workflow_run.actor":            map[string]any{"login": "author"},
			"sender":                        map[string]any{"login": "sender"},
		}, "test", "author"},
		{"sender", map[string]any{
			"workflow_run.triggering_actor": nil,
			"workflow_run.actor":            nil,
			"sender":                        map[string]any{"login": "sender"},
		}, "test", "sender"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := Summarize("workflow_run", variant(t, file, tt.set), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if s.Workflow != tt.wantTitle || s.Note.Title != tt.wantTitle {
				t.Errorf("Workflow, Title = %q, %q; want %q", s.Workflow, s.Note.Title, tt.wantTitle)
			}
			if s.Actor != tt.wantActr || s.Note.Actor != tt.wantActr {
				t.Errorf("Actor, Note.Actor = %q, %q; want %q", s.Actor, s.Note.Actor, tt.wantActr)
			}
		})
	}
}

func TestWorkflowRunDuration(t *testing.T) {
	t.Parallel()
	const file = "workflow_run/completed.payload.json"
	tests := []struct {
		name    string
		started any
		want    time.Duration
	}{
		{"positive", "2020-10-05T16:30:00Z", 3*time.Minute + 49*time.Second},
		{"equal", "2020-10-05T16:33:49Z", 0},
		{"negative", "2020-10-05T16:40:00Z", 0},
		{"unset", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := Summarize("workflow_run", variant(t, file, map[string]any{"workflow_run.run_started_at": tt.started}), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if s.Note.Duration != tt.want {
				t.Errorf("Duration = %v, want %v", s.Note.Duration, tt.want)
			}
		})
	}
}

func TestCheckSuiteApp(t *testing.T) {
	t.Parallel()
	const file = "check_suite/completed.payload.json"
	tests := []struct {
		name string
		app  any
		want string
	}{
		{"name", map[string]any{"name": "GitHub Actions", "slug": "github-actions"}, "GitHub Actions"},
		{"slug", map[string]any{"name": "", "slug": "github-actions"}, "github-actions"},
		{"null", json.RawMessage("null"), "checks"},
		{"empty", map[string]any{}, "checks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := variant(t, file, map[string]any{"check_suite.app": tt.app})
			s, err := Summarize("check_suite", body, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if s.Workflow != tt.want || s.Note.Title != tt.want {
				t.Errorf("Workflow, Title = %q, %q; want %q", s.Workflow, s.Note.Title, tt.want)
			}
		})
	}
}

func TestCheckRunConclusions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		action, conclusion string
		want               Outcome // "" for no Note
	}{
		{"completed", "failure", Failure},
		{"completed", "startup_failure", Failure},
		{"completed", "timed_out", TimedOut},
		{"completed", "success", ""},
		{"completed", "cancelled", ""},
		{"completed", "neutral", ""},
		{"completed", "skipped", ""},
		{"completed", "action_required", ""},
		{"rerequested", "failure", ""},
		{"created", "failure", ""},
	}
	for _, tt := range tests {
		t.Run(tt.action+"/"+tt.conclusion, func(t *testing.T) {
			t.Parallel()
			body := variant(t, "check_run/completed.payload.json", map[string]any{
				"action": tt.action, "check_run.conclusion": tt.conclusion,
			})
			s, err := Summarize("check_run", body, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if s.Subject != "check_suite:118578147" {
				t.Errorf("Subject = %q", s.Subject)
			}
			switch {
			case tt.want == "" && s.Note != nil:
				t.Errorf("Note = %+v, want none", *s.Note)
			case tt.want == "" && s.Key != "":
				t.Errorf("Key = %q, want none", s.Key)
			case tt.want != "" && s.Note == nil:
				t.Errorf("no Note, want %q", tt.want)
			case tt.want != "" && (s.Note.Outcome != tt.want || s.Key != "checkfail:118578147"):
				t.Errorf("Outcome, Key = %q, %q; want %q, checkfail:118578147", s.Note.Outcome, s.Key, tt.want)
			}
		})
	}
}

func TestPullRequestActions(t *testing.T) {
	t.Parallel()
	const file = "pull_request/opened.payload.json"
	people := map[string]any{
		"pull_request.user":      map[string]any{"login": "author"},
		"pull_request.merged_by": map[string]any{"login": "merger"},
		"sender":                 map[string]any{"login": "sender"},
	}
	tests := []struct {
		action     string
		merged     bool
		want       Outcome // "" for no Note
		wantActor  string
		conclusion string
	}{
		{"opened", false, Opened, "author", ""},
		{"reopened", false, Reopened, "author", ""},
		{"ready_for_review", false, ReadyForReview, "author", ""},
		{"synchronize", false, Synchronized, "sender", ""},
		{"closed", false, Closed, "sender", ""},
		{"closed", true, Merged, "merger", "merged"},
		{"labeled", false, "", "", ""},
		{"assigned", false, "", "", ""},
		{"edited", false, "", "", ""},
		{"converted_to_draft", false, "", "", ""},
		{"review_requested", false, "", "", ""},
		{"labeled", true, "", "", "merged"},
	}
	for _, tt := range tests {
		t.Run(tt.action+"/"+string(tt.want), func(t *testing.T) {
			t.Parallel()
			set := map[string]any{"action": tt.action, "pull_request.merged": tt.merged}
			for k, v := range people {
				set[k] = v
			}
			if tt.merged || tt.action == "closed" {
				set["pull_request.state"] = "closed"
			}
			s, err := Summarize("pull_request", variant(t, file, set), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if s.Actor != "sender" {
				t.Errorf("Summary.Actor = %q, want sender", s.Actor)
			}
			if s.Conclusion != tt.conclusion {
				t.Errorf("Conclusion = %q, want %q", s.Conclusion, tt.conclusion)
			}
			if tt.want == "" {
				if s.Note != nil {
					t.Errorf("Note = %+v, want none", *s.Note)
				}
				return
			}
			if s.Note == nil {
				t.Fatalf("no Note, want %q", tt.want)
			}
			if s.Note.Outcome != tt.want || s.Note.Actor != tt.wantActor {
				t.Errorf("Outcome, Actor = %q, %q; want %q, %q", s.Note.Outcome, s.Note.Actor, tt.want, tt.wantActor)
			}
			if s.Key != "" {
				t.Errorf("Key = %q, want none", s.Key)
			}
		})
	}
}

func TestPullRequestMergedWithoutMergedBy(t *testing.T) {
	t.Parallel()
	body := variant(t, "pull_request/closed.payload.json", map[string]any{
		"pull_request.merged": true, "sender": map[string]any{"login": "sender"},
	})
	s, err := Summarize("pull_request", body, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Note == nil || s.Note.Outcome != Merged || s.Note.Actor != "sender" {
		t.Errorf("Note = %+v, want Merged by sender", deref(s.Note))
	}
}

func TestStatusStates(t *testing.T) {
	t.Parallel()
	const file = "status/payload.json"
	tests := []struct {
		state string
		opts  Options
		want  Outcome // "" for no Note
	}{
		{"success", Options{}, Success},
		{"failure", Options{}, Failure},
		{"error", Options{}, Failure},
		{"pending", Options{}, ""},
		{"pending", Options{NotifyPending: true}, Pending},
		{"success", Options{NotifyPending: true}, Success},
		{"", Options{NotifyPending: true}, ""},
	}
	for _, tt := range tests {
		name := tt.state
		if tt.opts.NotifyPending {
			name += "/notify-pending"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			body := variant(t, file, map[string]any{
				"state": tt.state, "target_url": "https://ci.example.com/1", "description": "Tests passed",
			})
			s, err := Summarize("status", body, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if s.Status != tt.state || s.Conclusion != tt.state || s.URL != "https://ci.example.com/1" {
				t.Errorf("Status, Conclusion, URL = %q, %q, %q", s.Status, s.Conclusion, s.URL)
			}
			if tt.want == "" {
				if s.Note != nil || s.Key != "" {
					t.Errorf("Note, Key = %+v, %q; want none", deref(s.Note), s.Key)
				}
				return
			}
			if s.Note == nil {
				t.Fatalf("no Note, want %q", tt.want)
			}
			if s.Note.Outcome != tt.want || s.Note.Detail != "Tests passed" {
				t.Errorf("Outcome, Detail = %q, %q", s.Note.Outcome, s.Note.Detail)
			}
			wantKey := "status:codertocat/hello-world:6113728f27ae82c7b1a177c8d03f9e96e0adf246:default:" + tt.state
			if s.Key != wantKey {
				t.Errorf("Key = %q, want %q", s.Key, wantKey)
			}
		})
	}
}

func TestSummarizeMalformed(t *testing.T) {
	t.Parallel()
	tests := []struct{ event, body string }{
		{"workflow_run", `{"workflow_run":"x"}`},
		{"workflow_run", `{"action":"completed","workflow_run":{"run_number":"163"}}`},
		{"workflow_run", `{"workflow_run":{"run_started_at":"yesterday"}}`},
		{"pull_request", `{"pull_request":[]}`},
		{"pull_request", `{"pull_request":{"merged":"yes"}}`},
		{"check_suite", `{"check_suite":{"id":"118578147"}}`},
		{"check_suite", `{"check_suite":{"app":"github-actions"}}`},
		{"check_run", `{"check_run":{"check_suite":5}}`},
		{"status", `{"branches":{"name":"main"}}`},
		{"status", `{"sha":1}`},
		{"push", `{"repository":"Codertocat/Hello-World"}`},
		{"ping", `{"sender":[]}`},
		{"issues", `{"action":1}`},
		{"workflow_run", `not json`},
		{"push", `[]`},
	}
	for _, tt := range tests {
		t.Run(tt.event+"/"+tt.body, func(t *testing.T) {
			t.Parallel()
			s, err := Summarize(tt.event, []byte(tt.body), Options{})
			if err == nil {
				t.Fatalf("no error, Summary %+v", s)
			}
			if want := "malformed " + tt.event + " payload"; !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		})
	}
}

// Missing fields are never an error: the summary is just emptier.
func TestSummarizeMissingFields(t *testing.T) {
	t.Parallel()
	tests := []struct {
		event, body string
		wantNote    bool
	}{
		{"workflow_run", `{}`, false},
		{"workflow_run", `{"action":"completed"}`, false},
		{"workflow_run", `{"action":"completed","workflow_run":{}}`, true},
		{"check_suite", `{"action":"completed","check_suite":{"app":null,"head_branch":null}}`, true},
		{"check_run", `{"action":"completed","check_run":{"conclusion":"failure","check_suite":null}}`, true},
		{"pull_request", `{"action":"opened","pull_request":{"head":{"repo":null}}}`, true},
		{"status", `{"state":"success","branches":[],"target_url":null,"description":null}`, true},
		{"status", `{}`, false},
		{"ping", `{"zen":"Keep it logically awesome."}`, false},
		{"push", `null`, false},
	}
	for _, tt := range tests {
		t.Run(tt.event+"/"+tt.body, func(t *testing.T) {
			t.Parallel()
			s, err := Summarize(tt.event, []byte(tt.body), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if (s.Note != nil) != tt.wantNote {
				t.Errorf("Note = %+v, want present %v", deref(s.Note), tt.wantNote)
			}
			if s.Branches != nil {
				t.Errorf("Branches = %q, want none", s.Branches)
			}
		})
	}
}

func TestHeadName(t *testing.T) {
	t.Parallel()
	repo := func(name string) *repository { return &repository{FullName: name} }
	tests := []struct {
		name string
		head prBranch
		base string
		want string
	}{
		{"same repo", prBranch{Ref: "feature", Label: "octo:feature", Repo: repo("octo/repo")}, "octo/repo", "feature"},
		{"same repo other case", prBranch{Ref: "feature", Label: "octo:feature", Repo: repo("Octo/Repo")}, "octo/repo", "feature"},
		{"fork", prBranch{Ref: "feature", Label: "fork:feature", Repo: repo("fork/repo")}, "octo/repo", "fork:feature"},
		{"deleted fork", prBranch{Ref: "feature", Label: "fork:feature"}, "octo/repo", "fork:feature"},
		{"fork without label", prBranch{Ref: "feature", Repo: repo("fork/repo")}, "octo/repo", "feature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := headName(tt.head, tt.base, ""); got != tt.want {
				t.Errorf("headName = %q, want %q", got, tt.want)
			}
		})
	}
}
