// Package notify decides what to say about a summarized delivery: whether
// the filters keep it quiet, and what a check suite's summary counts. The
// "say it once" decisions (a repeated status, the check suite of a posted
// workflow run) are made by the ledger, atomically, from Summary.Key.
package notify

import (
	"context"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/bmatcuk/doublestar/v4"

	"github.com/ciwebhook/ciwebhook/internal/event"
	"github.com/ciwebhook/ciwebhook/internal/ledger"
)

// Filters are the settings that keep deliveries quiet.
type Filters struct {
	Repos            []string // lowercased owner/repo or owner/*
	Branches         []string // doublestar globs
	IgnoreActors     []string
	AllowedWorkflows []string
	IgnoredWorkflows []string
}

// Decision is what becomes of a delivery.
type Decision struct {
	State  ledger.State // Pending (a message is owed), Filtered or Ignored
	Reason string       // why it is Filtered or Ignored, for the answer and the log
}

// Subjects looks up the rows recorded under a subject (the check runs of a
// suite).
type Subjects interface {
	Subject(ctx context.Context, subject string) ([]ledger.Delivery, error)
}

// Policy applies Filters and completes notifications.
type Policy struct {
	f        Filters
	subjects Subjects
}

// New returns a policy; subjects may be nil when check suites need no counts
// (previews).
func New(f Filters, subjects Subjects) *Policy {
	return &Policy{f: f, subjects: subjects}
}

// Decide says whether s is worth a message. A delivery with nothing to say
// is Ignored before any filter is asked, so "filtered" always means a filter
// silenced a message.
func (p *Policy) Decide(ctx context.Context, s *event.Summary) (Decision, error) {
	if s.Note == nil {
		return Decision{State: ledger.Ignored, Reason: "nothing to notify for this event or action"}, nil
	}
	if reason := p.filter(s); reason != "" {
		return Decision{State: ledger.Filtered, Reason: reason}, nil
	}
	if s.Note.Kind == "check_suite" && p.subjects != nil && s.SuiteID != 0 {
		if err := p.countChecks(ctx, s); err != nil {
			return Decision{}, err
		}
	}
	return Decision{State: ledger.Pending}, nil
}

// filter returns why s is filtered out, or "".
func (p *Policy) filter(s *event.Summary) string {
	if len(p.f.Repos) > 0 && !p.repoAllowed(s.Repo) {
		if s.Repo == "" {
			return "no repository, and ALLOWED_REPOS is set"
		}
		return fmt.Sprintf("repository %s is not in ALLOWED_REPOS", s.Repo)
	}
	if len(p.f.Branches) > 0 && !anyBranch(p.f.Branches, s.Branches) {
		if len(s.Branches) == 0 {
			return "no branch, and ALLOWED_BRANCHES is set"
		}
		return fmt.Sprintf("branch %s is not in ALLOWED_BRANCHES", strings.Join(s.Branches, ", "))
	}
	if s.Actor != "" && matchAny(p.f.IgnoreActors, s.Actor) {
		return fmt.Sprintf("actor %s is in IGNORE_ACTORS", s.Actor)
	}
	if s.Note.Kind == "workflow_run" {
		if len(p.f.AllowedWorkflows) > 0 && !workflowMatch(p.f.AllowedWorkflows, s) {
			return fmt.Sprintf("workflow %s is not in ALLOWED_WORKFLOWS", s.Workflow)
		}
		if workflowMatch(p.f.IgnoredWorkflows, s) {
			return fmt.Sprintf("workflow %s is in IGNORED_WORKFLOWS", s.Workflow)
		}
	}
	return ""
}

func (p *Policy) repoAllowed(repo string) bool {
	repo = strings.ToLower(repo)
	owner, _, _ := strings.Cut(repo, "/")
	for _, r := range p.f.Repos {
		if r == repo || (strings.HasSuffix(r, "/*") && strings.TrimSuffix(r, "/*") == owner && repo != "") {
			return true
		}
	}
	return false
}

func anyBranch(globs, branches []string) bool {
	for _, b := range branches {
		if matchAny(globs, b) {
			return true
		}
	}
	return false
}

func matchAny(globs []string, s string) bool {
	for _, g := range globs {
		// Patterns were validated at start-up; a match error cannot happen.
		if ok, _ := doublestar.Match(g, s); ok {
			return true
		}
	}
	return false
}

// workflowMatch matches globs against the workflow's name and its file path
// (and the file's base name, so "ci.yml" works as well as the full path).
func workflowMatch(globs []string, s *event.Summary) bool {
	for _, v := range []string{s.Workflow, s.WorkflowPath, path.Base(s.WorkflowPath)} {
		if v != "" && v != "." && matchAny(globs, v) {
			return true
		}
	}
	return false
}

// failed are the check conclusions a suite summary lists by name.
var failed = map[event.Outcome]bool{event.Failure: true, event.TimedOut: true}

// countChecks fills a completed suite's counts from the check runs recorded
// under it. A check run can be re-run, so only the latest result of each
// check name counts.
func (p *Policy) countChecks(ctx context.Context, s *event.Summary) error {
	rows, err := p.subjects.Subject(ctx, fmt.Sprintf("check_suite:%d", s.SuiteID))
	if err != nil {
		return fmt.Errorf("count check runs of suite %d: %w", s.SuiteID, err)
	}
	latest := map[string]event.Outcome{}
	for _, r := range rows { // in order of arrival: later rows win
		if r.Conclusion != "" {
			latest[r.Workflow] = event.OutcomeOf(r.Conclusion)
		}
	}
	if len(latest) == 0 {
		return nil
	}
	s.Note.Counts = map[event.Outcome]int{}
	for name, o := range latest {
		s.Note.Counts[o]++
		if failed[o] {
			s.Note.Failed = append(s.Note.Failed, name)
		}
	}
	sort.Strings(s.Note.Failed)
	return nil
}
