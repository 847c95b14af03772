package notify

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/event"
	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/route"
)

func summary(kind, repo string, branches ...string) event.Summary {
	return event.Summary{Repo: repo, Branches: branches, Actor: "octocat", Workflow: "CI",
		WorkflowPath: ".github/workflows/ci.yml", Note: &event.Notification{Kind: kind}}
}

func TestFilters(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		f    Filters
		s    event.Summary
		want ledger.State
	}{
		{"no filters", Filters{}, summary("workflow_run", "o/r", "main"), ledger.Pending},
		{"no filters, no branch", Filters{}, summary("workflow_run", "o/r"), ledger.Pending},
		{"nothing to say beats a filter", Filters{Repos: []string{"x/y"}}, event.Summary{Repo: "o/r"}, ledger.Ignored},
		{"repo listed", Filters{Repos: []string{"octo-org/octo-repo"}}, summary("status", "octo-org/octo-repo", "main"), ledger.Pending},
		{"repo listed, other case", Filters{Repos: []string{"octo-org/octo-repo"}}, summary("status", "Octo-Org/Octo-Repo", "main"), ledger.Pending},
		{"repo not listed", Filters{Repos: []string{"octo-org/octo-repo"}}, summary("status", "octo-org/other", "main"), ledger.Filtered},
		{"owner glob", Filters{Repos: []string{"octo-org/*"}}, summary("status", "Octo-Org/anything", "main"), ledger.Pending},
		{"owner glob, other owner", Filters{Repos: []string{"octo-org/*"}}, summary("status", "octo-orgx/r", "main"), ledger.Filtered},
		{"owner glob is not a prefix", Filters{Repos: []string{"octo/*"}}, summary("status", "octo-org/r", "main"), ledger.Filtered},
		{"no repo, repos set", Filters{Repos: []string{"o/*"}}, summary("status", "", "main"), ledger.Filtered},
		{"branch exact", Filters{Branches: []string{"main"}}, summary("workflow_run", "o/r", "main"), ledger.Pending},
		{"branch not listed", Filters{Branches: []string{"main"}}, summary("workflow_run", "o/r", "mainline"), ledger.Filtered},
		{"single star stays in a segment", Filters{Branches: []string{"release/*"}}, summary("workflow_run", "o/r", "release/1.2"), ledger.Pending},
		{"single star does not cross /", Filters{Branches: []string{"release/*"}}, summary("workflow_run", "o/r", "release/1/hotfix"), ledger.Filtered},
		{"double star crosses /", Filters{Branches: []string{"feature/**"}}, summary("workflow_run", "o/r", "feature/a/b/c"), ledger.Pending},
		{"any branch of a status", Filters{Branches: []string{"main"}}, summary("status", "o/r", "gh-pages", "main"), ledger.Pending},
		{"no branch, branches set", Filters{Branches: []string{"**"}}, summary("workflow_run", "o/r"), ledger.Filtered},
		{"ignored actor", Filters{IgnoreActors: []string{"*[[]bot]"}}, func() event.Summary {
			s := summary("workflow_run", "o/r", "main")
			s.Actor = "dependabot[bot]"
			return s
		}(), ledger.Filtered},
		{"actor not ignored", Filters{IgnoreActors: []string{"*[[]bot]"}}, summary("workflow_run", "o/r", "main"), ledger.Pending},
		{"workflow allowed by path", Filters{AllowedWorkflows: []string{".github/workflows/ci.yml"}}, summary("workflow_run", "o/r", "main"), ledger.Pending},
		{"workflow allowed by file name", Filters{AllowedWorkflows: []string{"ci.yml"}}, summary("workflow_run", "o/r", "main"), ledger.Pending},
		{"workflow allowed by name", Filters{AllowedWorkflows: []string{"C*"}}, summary("workflow_run", "o/r", "main"), ledger.Pending},
		{"workflow not allowed", Filters{AllowedWorkflows: []string{"deploy*"}}, summary("workflow_run", "o/r", "main"), ledger.Filtered},
		{"workflow ignored", Filters{IgnoredWorkflows: []string{".github/workflows/*.yml"}}, summary("workflow_run", "o/r", "main"), ledger.Filtered},
		{"workflow filters leave statuses alone", Filters{AllowedWorkflows: []string{"deploy*"}}, summary("status", "o/r", "main"), ledger.Pending},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := New(tc.f, nil).Decide(context.Background(), &tc.s)
			if err != nil {
				t.Fatal(err)
			}
			if d.State != tc.want {
				t.Errorf("got %s (%s), want %s", d.State, d.Reason, tc.want)
			}
			if (d.State == ledger.Pending) != (d.Reason == "") {
				t.Errorf("reason %q for %s: only a silenced delivery has a reason", d.Reason, d.State)
			}
		})
	}
}

type subjects map[string][]ledger.Delivery

func (s subjects) Subject(_ context.Context, subject string) ([]ledger.Delivery, error) {
	return s[subject], nil
}

func TestCheckSuiteCounts(t *testing.T) {
	t.Parallel()
	runs := subjects{"check_suite:7": {
		{Workflow: "lint", Conclusion: "failure"},
		{Workflow: "test", Conclusion: "failure"},
		{Workflow: "test", Conclusion: "success"}, // re-run: the latest result counts
		{Workflow: "build", Conclusion: "success"},
		{Workflow: "e2e", Conclusion: "timed_out"},
		{Workflow: "docs", Conclusion: "skipped"},
		{Workflow: "slow", Conclusion: ""}, // still running
	}}
	s := summary("check_suite", "o/r", "main")
	s.SuiteID = 7
	if _, err := New(Filters{}, runs).Decide(context.Background(), &s); err != nil {
		t.Fatal(err)
	}
	want := map[event.Outcome]int{event.Failure: 1, event.Success: 2, event.TimedOut: 1, event.Skipped: 1}
	if len(s.Note.Counts) != len(want) {
		t.Errorf("counts %v, want %v", s.Note.Counts, want)
	}
	for k, v := range want {
		if s.Note.Counts[k] != v {
			t.Errorf("counts[%s] = %d, want %d", k, s.Note.Counts[k], v)
		}
	}
	if !slices.Equal(s.Note.Failed, []string{"e2e", "lint"}) {
		t.Errorf("failed %v, want [e2e lint]", s.Note.Failed)
	}
}

func TestCheckSuiteLookupError(t *testing.T) {
	t.Parallel()
	s := summary("check_suite", "o/r", "main")
	s.SuiteID = 1
	if _, err := New(Filters{}, failing{}).Decide(context.Background(), &s); err == nil {
		t.Fatal("a ledger error while counting checks must not be swallowed")
	}
}

type failing struct{}

func (failing) Subject(context.Context, string) ([]ledger.Delivery, error) {
	return nil, errors.New("disk on fire")
}

func jobRow(t *testing.T, name string, o event.Outcome, attempt int, step string) ledger.Delivery {
	t.Helper()
	msg, err := json.Marshal(event.Notification{Kind: "workflow_job", Outcome: o, Title: name, Number: attempt,
		Detail: step, Duration: time.Minute, URL: "https://github.com/o/r/runs/" + name})
	if err != nil {
		t.Fatal(err)
	}
	return ledger.Delivery{Event: "workflow_job", Workflow: name, Conclusion: string(o), Message: msg, State: ledger.Ignored}
}

// A failed run lists its attempt's failed jobs, latest result per job, at
// most MaxJobs of them, in the order the jobs first reported.
func TestFailedJobs(t *testing.T) {
	t.Parallel()
	rows := []ledger.Delivery{
		jobRow(t, "flaky", event.Failure, 1, "old attempt"),
		jobRow(t, "lint", event.Failure, 2, "golangci-lint"),
		jobRow(t, "build", event.Success, 2, ""),
		jobRow(t, "flaky", event.Success, 2, ""),
		{Event: "workflow_job", Workflow: "queued-only", Message: nil},
	}
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		rows = append(rows, jobRow(t, name, event.TimedOut, 2, "step "+name))
	}
	rows = append(rows, jobRow(t, "lint", event.Failure, 2, "golangci-lint again"))
	p := New(Filters{}, subjects{event.RunSubject(77): rows})

	s := summary("workflow_run", "o/r", "main")
	s.Note.Outcome = event.Failure
	s.Run = &event.RunInfo{ID: 77, Attempt: 2}
	if _, err := p.Decide(context.Background(), &s); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, j := range s.Note.Jobs {
		names = append(names, j.Name+"/"+j.Step)
	}
	want := []string{"lint/golangci-lint again", "a/step a", "b/step b", "c/step c", "d/step d"}
	if !slices.Equal(names, want) || s.Note.MoreJobs != 1 {
		t.Errorf("jobs %v + %d more, want %v + 1", names, s.Note.MoreJobs, want)
	}
	if s.Note.Jobs[0].Duration != time.Minute || s.Note.Jobs[0].URL != "https://github.com/o/r/runs/lint" {
		t.Errorf("job details lost: %+v", s.Note.Jobs[0])
	}

	// A success lists no jobs, whatever is recorded.
	ok := summary("workflow_run", "o/r", "main")
	ok.Note.Outcome = event.Success
	ok.Run = &event.RunInfo{ID: 77, Attempt: 2}
	if _, err := p.Decide(context.Background(), &ok); err != nil || len(ok.Note.Jobs) != 0 {
		t.Errorf("success lists jobs %+v (%v)", ok.Note.Jobs, err)
	}
}

// Failures mention the actor and a PR run's author, by Slack ID; successes
// and unknown logins mention nobody.
func TestMentions(t *testing.T) {
	t.Parallel()
	prMsg, _ := json.Marshal(event.Notification{Kind: "pull_request", Outcome: event.Opened, Author: "Alice", Actor: "alice"})
	subs := subjects{event.PRSubject("O/R", 5): {{Event: "pull_request", Message: prMsg}}}
	p := New(Filters{Mentions: map[string]string{"octocat": "U0123", "alice": "U0456"}}, subs)
	cases := []struct {
		kind    string
		outcome event.Outcome
		prs     []int
		actor   string
		want    []string
	}{
		{"workflow_run", event.Failure, []int{5}, "OctoCat", []string{"U0123", "U0456"}},
		{"workflow_run", event.TimedOut, []int{6}, "octocat", []string{"U0123"}},
		{"workflow_run", event.Failure, []int{5}, "alice", []string{"U0456"}},
		{"workflow_run", event.Success, []int{5}, "octocat", nil},
		{"workflow_run", event.Cancelled, nil, "octocat", nil},
		{"status", event.Failure, nil, "octocat", []string{"U0123"}},
		{"check_suite", event.Failure, nil, "stranger", nil},
		{"check_run", event.TimedOut, nil, "octocat", []string{"U0123"}},
		{"pull_request", event.Closed, nil, "octocat", nil},
	}
	for _, tc := range cases {
		s := summary(tc.kind, "o/r", "main")
		s.Note.Outcome, s.Note.Actor = tc.outcome, tc.actor
		if tc.kind == "workflow_run" {
			s.Run = &event.RunInfo{ID: 1, Attempt: 1, PullRequests: tc.prs}
		}
		if _, err := p.Decide(context.Background(), &s); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(s.Note.Mentions, tc.want) {
			t.Errorf("%s %s by %s, PRs %v: mentions %v, want %v", tc.kind, tc.outcome, tc.actor, tc.prs, s.Note.Mentions, tc.want)
		}
	}
}

// streaks records what was judged and answers a scripted verdict.
type streaks struct {
	subjects
	verdict ledger.StreakVerdict
	keys    []string
	runs    []ledger.StreakRun
}

func (s *streaks) Streak(_ context.Context, key string, run ledger.StreakRun) (ledger.StreakVerdict, error) {
	s.keys, s.runs = append(s.keys, key), append(s.runs, run)
	return s.verdict, nil
}

// NOTIFY_MODE=changes: which results are judged under which key, what stays
// quiet without asking, and what a verdict does to the message.
func TestChangesMode(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	wr := func(o event.Outcome) event.Summary {
		s := summary("workflow_run", "Octo/Repo", "main")
		s.Ref, s.Note.Outcome, s.Note.Actor = "main", o, "octocat"
		s.Run = &event.RunInfo{ID: 55, Attempt: 2, Number: 9, At: at}
		return s
	}
	t.Run("failed", func(t *testing.T) {
		st := &streaks{verdict: ledger.StreakVerdict{Verdict: ledger.VerdictFailed}}
		p := New(Filters{Mode: ModeChanges, Mentions: map[string]string{"octocat": "U1"}}, st)
		s := wr(event.Failure)
		d, err := p.Decide(context.Background(), &s)
		if err != nil || d.State != ledger.Pending || d.Quiet || s.Note.Change != "failed" || len(s.Note.Mentions) != 1 {
			t.Fatalf("%+v %v, note %+v", d, err, s.Note)
		}
		want := ledger.StreakRun{ID: "55", Attempt: 2, Number: 9, Result: ledger.Fail, At: at}
		if st.keys[0] != "wf:octo/repo:.github/workflows/ci.yml:main" || st.runs[0] != want {
			t.Errorf("judged %q %+v, want the workflow's file on its branch, %+v", st.keys[0], st.runs[0], want)
		}
	})
	t.Run("fixed", func(t *testing.T) {
		st := &streaks{verdict: ledger.StreakVerdict{Verdict: ledger.VerdictFixed, BrokenSince: at.Add(-90 * time.Minute), BrokenRuns: 3}}
		p := New(Filters{Mode: ModeChanges, Mentions: map[string]string{"octocat": "U1"}}, st)
		s := wr(event.Success)
		if d, err := p.Decide(context.Background(), &s); err != nil || d.State != ledger.Pending {
			t.Fatalf("%+v %v", d, err)
		}
		if s.Note.Change != "fixed" || s.Note.BrokenRuns != 3 || s.Note.BrokenFor != 90*time.Minute || len(s.Note.Mentions) != 0 {
			t.Errorf("fixed note %+v", s.Note)
		}
	})
	t.Run("quiet", func(t *testing.T) {
		st := &streaks{verdict: ledger.StreakVerdict{Verdict: ledger.VerdictStillFailing}}
		p := New(Filters{Mode: ModeChanges}, st)
		s := wr(event.Failure)
		d, err := p.Decide(context.Background(), &s)
		if err != nil || d.State != ledger.Ignored || !d.Quiet || d.Reason != "NOTIFY_MODE=changes: still failing" {
			t.Errorf("%+v %v", d, err)
		}
	})
	t.Run("routing", func(t *testing.T) {
		st := &streaks{verdict: ledger.StreakVerdict{Verdict: ledger.VerdictPassing}}
		p := New(Filters{Mode: ModeChanges}, st)
		cases := []struct {
			s       event.Summary
			judged  string // the key, or "" when nothing is judged
			pending bool
		}{
			{func() event.Summary {
				s := summary("check_run", "o/r", "main")
				s.Note.Outcome = event.Failure
				return s
			}(), "", false},
			{func() event.Summary {
				s := summary("check_suite", "o/r", "main")
				s.Workflow, s.Note.Outcome = "GitHub Actions", event.Failure
				return s
			}(), "", false},
			{func() event.Summary {
				s := summary("check_suite", "o/r", "main")
				s.Workflow, s.Ref, s.SuiteID, s.Note.Outcome = "Buildkite", "main", 7, event.Success
				return s
			}(), "checks:o/r:Buildkite:main", false},
			{func() event.Summary {
				s := summary("status", "o/r", "main")
				s.Workflow, s.Ref, s.Note.Outcome, s.Note.SHA = "ci/jenkins", "main", event.Success, "abc"
				return s
			}(), "status:o/r:ci/jenkins:main", false},
			{func() event.Summary { s := summary("status", "o/r", "main"); s.Note.Outcome = event.Pending; return s }(), "", true},
			{func() event.Summary {
				s := summary("pull_request", "o/r", "main")
				s.Note.Outcome = event.Opened
				return s
			}(), "", true},
		}
		for i, tc := range cases {
			st.keys = nil
			d, err := p.Decide(context.Background(), &tc.s)
			if err != nil || (d.State == ledger.Pending) != tc.pending {
				t.Errorf("case %d (%s): %+v %v", i, tc.s.Note.Kind, d, err)
			}
			if got := strings.Join(st.keys, ","); got != tc.judged {
				t.Errorf("case %d (%s): judged %q, want %q", i, tc.s.Note.Kind, got, tc.judged)
			}
		}
	})
	t.Run("started runs mark newer", func(t *testing.T) {
		st := &streaks{}
		p := New(Filters{Mode: ModeChanges}, st)
		s := summary("workflow_run", "o/r", "main")
		s.Note, s.Action, s.Ref = nil, "requested", "main"
		s.Run = &event.RunInfo{ID: 60, Attempt: 1, Number: 10}
		if d, err := p.Decide(context.Background(), &s); err != nil || d.State != ledger.Ignored || len(st.runs) != 1 || st.runs[0].Result != "" || st.runs[0].Number != 10 {
			t.Errorf("%+v %v, judged %+v", d, err, st.runs)
		}
		// Nor does a run on a branch the filters silence.
		st.runs = nil
		if _, err := New(Filters{Mode: ModeChanges, Branches: []string{"release/*"}}, st).Decide(context.Background(), &s); err != nil || len(st.runs) != 0 {
			t.Errorf("a filtered run's start was judged: %+v (%v)", st.runs, err)
		}
		// Mode all asks nothing.
		st.runs = nil
		if _, err := New(Filters{}, st).Decide(context.Background(), &s); err != nil || len(st.runs) != 0 {
			t.Errorf("mode all judged %+v (%v)", st.runs, err)
		}
	})
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	const file = `routes:
  - name: api-team
    repos: ["octo-org/api-*"]
    branches: ["main", "release/**"]
    events: ["workflow_run", "check_suite", "status"]
    webhook_url: https://hooks.slack.com/services/T/B/api
  - name: platform-live
    repos: ["octo-org/*"]
    channel: C0123456789
    continue: true
  - name: audit
    events: ["pull_request"]
    webhook_url: https://hooks.slack.com/services/T/B/audit
`
	routes, err := route.Parse("routes.yaml", []byte(file), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	interim := func(s event.Summary) event.Summary {
		s.Note.Interim = true
		return s
	}
	actions := func(kind string) event.Summary {
		s := summary(kind, "octo-org/api-gateway", "main")
		s.App, s.Workflow = "GitHub Actions", "GitHub Actions"
		return s
	}
	cases := []struct {
		name     string
		fallback bool
		mode     string
		s        event.Summary
		want     ledger.State
		dests    []string
	}{
		{"first route takes it", false, "", summary("workflow_run", "octo-org/api-gateway", "main"), ledger.Pending, []string{"api-team"}},
		{"continue lets the next try", false, "", summary("pull_request", "octo-org/web", "main"), ledger.Pending, []string{"platform-live", "audit"}},
		{"continue, next does not match", false, "", summary("workflow_run", "octo-org/web", "main"), ledger.Pending, []string{"platform-live"}},
		{"branch outside the first route's", false, "", summary("workflow_run", "octo-org/api-gateway", "feature/x"), ledger.Pending, []string{"platform-live"}},
		{"no route, no SLACK_WEBHOOK_URL", false, "", summary("workflow_run", "someone/else", "main"), ledger.Filtered, nil},
		{"no route, SLACK_WEBHOOK_URL set", true, "", summary("workflow_run", "someone/else", "main"), ledger.Pending, []string{""}},
		{"a run on its way goes to a channel route", false, "", interim(summary("workflow_run", "octo-org/web", "main")), ledger.Pending, []string{"platform-live"}},
		// api-team takes it and stops there; its webhook cannot update a message.
		{"a run on its way taken by a webhook route", true, "", interim(summary("workflow_run", "octo-org/api-gateway", "release/2")), ledger.Ignored, nil},
		{"a run on its way with no channel route", true, "", interim(summary("workflow_run", "someone/else", "main")), ledger.Ignored, nil},
		{"a run on its way in changes mode", false, ModeChanges, interim(summary("workflow_run", "octo-org/web", "main")), ledger.Ignored, nil},
		// Routed by app name, an Actions suite would reach platform-live,
		// which api-team's route kept the run from: the run says it.
		{"an Actions check suite", true, "", actions("check_suite"), ledger.Ignored, nil},
		{"an Actions check run", true, "", actions("check_run"), ledger.Ignored, nil},
		{"another app's check suite", false, "", func() event.Summary {
			s := summary("check_suite", "octo-org/api-gateway", "main")
			s.App, s.Workflow = "Buildkite", "Buildkite"
			return s
		}(), ledger.Pending, []string{"api-team"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := New(Filters{Routes: routes, Fallback: tc.fallback, Mode: tc.mode}, nil)
			s := tc.s
			d, err := p.Decide(context.Background(), &s)
			if err != nil {
				t.Fatal(err)
			}
			if d.State != tc.want || !slices.Equal(d.Destinations, tc.dests) {
				t.Errorf("Decide = %s %q (%s), want %s %q", d.State, d.Destinations, d.Reason, tc.want, tc.dests)
			}
			if d.State != ledger.Pending && d.Reason == "" {
				t.Errorf("%s without a reason", d.State)
			}
		})
	}
}

// Without routes, everything goes to the default destination, and a run on
// its way says nothing, exactly as before routes existed.
func TestNoRoutes(t *testing.T) {
	t.Parallel()
	p := New(Filters{}, nil)
	s := summary("workflow_run", "o/r", "main")
	if d, _ := p.Decide(context.Background(), &s); d.State != ledger.Pending || !slices.Equal(d.Destinations, []string{""}) {
		t.Errorf("Decide = %+v, want pending to the default destination", d)
	}
	s = summary("workflow_run", "o/r", "main")
	s.Note.Interim = true
	if d, _ := p.Decide(context.Background(), &s); d.State != ledger.Ignored || s.Note != nil {
		t.Errorf("Decide of a run on its way = %+v (note %v), want ignored with nothing to say", d, s.Note)
	}
}
