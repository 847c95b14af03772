package notify

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/ciwebhook/ciwebhook/internal/event"
	"github.com/ciwebhook/ciwebhook/internal/ledger"
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
