// Package notify decides what to say about a summarized delivery: whether
// the filters keep it quiet, and what a check suite's summary counts. The
// "say it once" decisions (a repeated status, the check suite of a posted
// workflow run) are made by the ledger, atomically, from Summary.Key.
package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/event"
	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/route"
)

// Filters are the settings that keep deliveries quiet.
type Filters struct {
	Repos            []string // lowercased owner/repo or owner/*
	Branches         []string // doublestar globs
	IgnoreActors     []string
	AllowedWorkflows []string
	IgnoredWorkflows []string

	// Mentions maps lowercased GitHub logins to Slack user IDs
	// (SLACK_MENTIONS): who is mentioned on a failure.
	Mentions map[string]string

	// Mode is NOTIFY_MODE: ModeAll ("" too) or ModeChanges.
	Mode string

	// Routes are CONFIG_FILE's routes. Without any, every message goes to
	// the default destination (SLACK_WEBHOOK_URL, or the log).
	Routes []route.Route
	// Fallback says SLACK_WEBHOOK_URL is set: with routes, what none of
	// them takes goes there instead of being filtered.
	Fallback bool
}

// Notification modes.
const (
	ModeAll     = "all"
	ModeChanges = "changes"
)

// Decision is what becomes of a delivery.
type Decision struct {
	State  ledger.State // Pending (a message is owed), Filtered or Ignored
	Reason string       // why it is Filtered or Ignored, for the answer and the log
	// Quiet: NOTIFY_MODE=changes found nothing changed (Ignored, counted
	// as suppressed).
	Quiet bool
	// Destinations are where a Pending delivery's message goes: route
	// names, in the order the routes were matched; "" is the default
	// destination.
	Destinations []string
}

// Subjects looks up the rows recorded under a subject (the check runs of a
// suite).
type Subjects interface {
	Subject(ctx context.Context, subject string) ([]ledger.Delivery, error)
}

// Streaks judges results for NOTIFY_MODE=changes (ledger.Store.Streak).
type Streaks interface {
	Streak(ctx context.Context, key string, run ledger.StreakRun) (ledger.StreakVerdict, error)
}

// Policy applies Filters and completes notifications.
type Policy struct {
	f        Filters
	live     bool // a route posts to a channel: interim states can be shown
	subjects Subjects
	streaks  Streaks // nil: every result is judged new (previews)
	now      func() time.Time
}

// New returns a policy; subjects may be nil when check suites need no counts
// (previews). When subjects also has a Streak method (every ledger.Store
// does), NOTIFY_MODE=changes judges results with it.
func New(f Filters, subjects Subjects) *Policy {
	p := &Policy{f: f, subjects: subjects, now: time.Now}
	for _, r := range f.Routes {
		p.live = p.live || r.Channel != ""
	}
	if st, ok := subjects.(Streaks); ok {
		p.streaks = st
	}
	return p
}

// Decide says whether s is worth a message. A delivery with nothing to say
// is Ignored before any filter is asked, so "filtered" always means a filter
// silenced a message.
func (p *Policy) Decide(ctx context.Context, s *event.Summary) (Decision, error) {
	if s.Note != nil && s.Note.Interim && (!p.live || p.f.Mode == ModeChanges) {
		// A run on its way is shown only by a message that its result
		// will update, and NOTIFY_MODE=changes may not post the result.
		s.Note = nil
	}
	if s.Note == nil {
		if err := p.started(ctx, s); err != nil {
			return Decision{}, err
		}
		return Decision{State: ledger.Ignored, Reason: "nothing to notify for this event or action"}, nil
	}
	if reason := p.filter(s); reason != "" {
		return Decision{State: ledger.Filtered, Reason: reason}, nil
	}
	if len(p.f.Routes) > 0 && s.App == actionsApp && (s.Note.Kind == "check_suite" || s.Note.Kind == "check_run") {
		// Routes may choose by workflow, which an Actions check suite or
		// check run does not name: routed on their own, they could reach a
		// channel the run's route kept it from. The run's workflow_run
		// delivery says it, routed by its workflow.
		return Decision{State: ledger.Ignored, Reason: "with CONFIG_FILE, a GitHub Actions run is said by its workflow_run delivery"}, nil
	}
	dests, reason := p.route(s)
	if len(dests) == 0 {
		if s.Note.Interim {
			return Decision{State: ledger.Ignored, Reason: reason}, nil
		}
		return Decision{State: ledger.Filtered, Reason: reason}, nil
	}
	if p.f.Mode == ModeChanges {
		if d, err := p.judge(ctx, s); err != nil || d.State != ledger.Pending {
			return d, err
		}
	}
	if s.Note.Kind == "check_suite" && p.subjects != nil && s.SuiteID != 0 {
		if err := p.countChecks(ctx, s); err != nil {
			return Decision{}, err
		}
	}
	if s.Note.Kind == "workflow_run" && failed[s.Note.Outcome] && p.subjects != nil && s.Run != nil && s.Run.ID != 0 {
		if err := p.failedJobs(ctx, s); err != nil {
			return Decision{}, err
		}
	}
	if err := p.mention(ctx, s); err != nil {
		return Decision{}, err
	}
	return Decision{State: ledger.Pending, Destinations: dests}, nil
}

// RouteSubject is what routes look at in s. The event is the note's kind
// (the X-GitHub-Event of every event that has something to say); "" when
// s has nothing to say.
func RouteSubject(s *event.Summary) route.Subject {
	var kind string
	if s.Note != nil {
		kind = s.Note.Kind
	}
	return route.Subject{Event: kind, Repo: s.Repo, Branches: s.Branches, Workflow: s.Workflow, WorkflowPath: s.WorkflowPath}
}

// route names the destinations of s's message, or says why there are none.
// An interim state goes only to channel routes, where it can be updated.
func (p *Policy) route(s *event.Summary) ([]string, string) {
	if len(p.f.Routes) == 0 {
		return []string{""}, ""
	}
	var dests []string
	for _, r := range route.Match(p.f.Routes, RouteSubject(s)) {
		if !s.Note.Interim || r.Channel != "" {
			dests = append(dests, r.Name)
		}
	}
	switch {
	case len(dests) > 0:
		return dests, ""
	case s.Note.Interim:
		return nil, "a run on its way is shown only on channel routes, and none takes it"
	case p.f.Fallback:
		return []string{""}, ""
	}
	return nil, "no route in CONFIG_FILE takes it, and SLACK_WEBHOOK_URL is not set"
}

// failedJobs lists a failed run's failed jobs from the workflow_job rows
// recorded under it. A re-run's message is about its own attempt, so jobs
// of other attempts are left out; within an attempt the latest row of a
// job name wins (rows are in order of arrival).
func (p *Policy) failedJobs(ctx context.Context, s *event.Summary) error {
	rows, err := p.subjects.Subject(ctx, event.RunSubject(s.Run.ID))
	if err != nil {
		return fmt.Errorf("list jobs of run %d: %w", s.Run.ID, err)
	}
	var names []string
	latest := map[string]event.Notification{}
	for _, r := range rows {
		job, ok := event.JobOf(r.Message)
		if !ok || (job.Number != 0 && job.Number != s.Run.Attempt) {
			continue
		}
		if _, seen := latest[job.Title]; !seen {
			names = append(names, job.Title)
		}
		latest[job.Title] = job
	}
	s.Note.Jobs, s.Note.MoreJobs = nil, 0
	for _, name := range names { // in the order the jobs first reported
		job := latest[name]
		if !failed[job.Outcome] {
			continue
		}
		if len(s.Note.Jobs) == event.MaxJobs {
			s.Note.MoreJobs++
			continue
		}
		s.Note.Jobs = append(s.Note.Jobs, event.Job{Name: job.Title, Step: job.Detail, Duration: job.Duration, URL: job.URL})
	}
	return nil
}

// mentionKinds are the notifications that may mention someone, on failure.
var mentionKinds = map[string]bool{"workflow_run": true, "check_suite": true, "check_run": true, "status": true}

// mention resolves who a failure message mentions: the actor and, for a
// pull-request run, the PR's author when a delivery of that PR was posted
// (workflow_run payloads carry PR numbers only). Successes mention nobody.
func (p *Policy) mention(ctx context.Context, s *event.Summary) error {
	s.Note.Mentions = nil
	if len(p.f.Mentions) == 0 || !mentionKinds[s.Note.Kind] || !failed[s.Note.Outcome] {
		return nil
	}
	logins := []string{s.Note.Actor}
	if s.Run != nil && p.subjects != nil {
		for _, n := range s.Run.PullRequests {
			rows, err := p.subjects.Subject(ctx, event.PRSubject(s.Repo, n))
			if err != nil {
				return fmt.Errorf("find the author of pull request %d: %w", n, err)
			}
			for i := len(rows) - 1; i >= 0; i-- {
				var pr event.Notification
				if json.Unmarshal(rows[i].Message, &pr) == nil && pr.Author != "" {
					logins = append(logins, pr.Author)
					break
				}
			}
		}
	}
	for _, login := range logins {
		id, ok := p.f.Mentions[strings.ToLower(login)]
		if ok && !slices.Contains(s.Note.Mentions, id) {
			s.Note.Mentions = append(s.Note.Mentions, id)
		}
	}
	return nil
}

// filter returns why s is filtered out, or "".
func (p *Policy) filter(s *event.Summary) string {
	if len(p.f.Repos) > 0 && !p.repoAllowed(s.Repo) {
		if s.Repo == "" {
			return "no repository, and ALLOWED_REPOS is set"
		}
		return fmt.Sprintf("repository %s is not in ALLOWED_REPOS", s.Repo)
	}
	if len(p.f.Branches) > 0 && !route.AnyBranch(p.f.Branches, s.Branches) {
		if len(s.Branches) == 0 {
			return "no branch, and ALLOWED_BRANCHES is set"
		}
		return fmt.Sprintf("branch %s is not in ALLOWED_BRANCHES", strings.Join(s.Branches, ", "))
	}
	if s.Actor != "" && route.MatchAny(p.f.IgnoreActors, s.Actor) {
		return fmt.Sprintf("actor %s is in IGNORE_ACTORS", s.Actor)
	}
	if s.Note.Kind == "workflow_run" {
		if len(p.f.AllowedWorkflows) > 0 && !route.WorkflowMatch(p.f.AllowedWorkflows, s.Workflow, s.WorkflowPath) {
			return fmt.Sprintf("workflow %s is not in ALLOWED_WORKFLOWS", s.Workflow)
		}
		if route.WorkflowMatch(p.f.IgnoredWorkflows, s.Workflow, s.WorkflowPath) {
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

// streakKey names what a result is judged against: the previous results of
// the same workflow (by file, which survives a rename of its name), status
// context or check app, on the same branch of the same repository. "" when
// the kind is not judged.
func streakKey(s *event.Summary) string {
	repo := strings.ToLower(s.Repo)
	switch s.Note.Kind {
	case "workflow_run":
		return "wf:" + repo + ":" + firstNonEmpty(s.WorkflowPath, s.Workflow) + ":" + s.Ref
	case "status":
		return "status:" + repo + ":" + s.Workflow + ":" + s.Ref
	case "check_suite":
		return "checks:" + repo + ":" + s.Workflow + ":" + s.Ref
	}
	return ""
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// actionsApp is the app of the check suites that GitHub Actions runs; their
// workflow runs are judged one by one instead.
const actionsApp = "GitHub Actions"

// started tells the streak of a workflow that a run has begun (requested,
// in progress), so that an older run cancelled meanwhile reads as
// superseded even before the newer one completes.
func (p *Policy) started(ctx context.Context, s *event.Summary) error {
	if p.f.Mode != ModeChanges || p.streaks == nil || s.Run == nil || s.Run.Number <= 0 || s.Action == "completed" {
		return nil
	}
	// A run the filters would silence is not judged when it completes, so
	// its start must not leave a streak behind either.
	probe := *s
	probe.Note = &event.Notification{Kind: "workflow_run"}
	if p.filter(&probe) != "" {
		return nil
	}
	key := "wf:" + strings.ToLower(s.Repo) + ":" + firstNonEmpty(s.WorkflowPath, s.Workflow) + ":" + s.Ref
	_, err := p.streaks.Streak(ctx, key, ledger.StreakRun{ID: runID(s), Attempt: s.Run.Attempt, Number: int64(s.Run.Number), At: p.now()})
	if err != nil {
		return fmt.Errorf("note a started run: %w", err)
	}
	return nil
}

func runID(s *event.Summary) string {
	if s.Run.ID != 0 {
		return strconv.FormatInt(s.Run.ID, 10)
	}
	return "#" + strconv.Itoa(s.Run.Number)
}

// resultOf is how a streak reads an outcome.
func resultOf(o event.Outcome) string {
	switch o {
	case event.Success:
		return ledger.Pass
	case event.Failure, event.TimedOut:
		return ledger.Fail
	case event.Cancelled:
		return ledger.Cancelled
	}
	return ledger.Other
}

// judge applies NOTIFY_MODE=changes: a result posts only when it changes
// something (a new failure, a fix, a cancelled newest run). Pull requests
// are not results and post as in mode all.
func (p *Policy) judge(ctx context.Context, s *event.Summary) (Decision, error) {
	quiet := func(why string) (Decision, error) {
		return Decision{State: ledger.Ignored, Reason: "NOTIFY_MODE=changes: " + why, Quiet: true}, nil
	}
	n := s.Note
	switch n.Kind {
	case "check_run":
		// A failing check run is said early in mode all; here the suite's
		// result, or the workflow run's, is what gets judged.
		return quiet("check runs are judged with their suite")
	case "check_suite":
		if s.Workflow == actionsApp {
			return quiet("GitHub Actions suites are judged by their workflow runs")
		}
	case "status":
		if n.Outcome == event.Pending {
			return Decision{State: ledger.Pending}, nil // asked for with NOTIFY_PENDING
		}
	}
	key := streakKey(s)
	if key == "" || p.streaks == nil {
		return Decision{State: ledger.Pending}, nil
	}
	run := ledger.StreakRun{Attempt: 1, Result: resultOf(n.Outcome), At: p.now()}
	switch n.Kind {
	case "workflow_run":
		if s.Run == nil {
			return Decision{State: ledger.Pending}, nil
		}
		run.ID, run.Attempt, run.Number = runID(s), s.Run.Attempt, int64(s.Run.Number)
		if !s.Run.At.IsZero() {
			run.At = s.Run.At
		}
	case "status":
		run.ID = n.SHA // a status set again on the same commit is the same run
	case "check_suite":
		run.ID, run.Number = strconv.FormatInt(s.SuiteID, 10), s.SuiteID
	}
	v, err := p.streaks.Streak(ctx, key, run)
	if err != nil {
		return Decision{}, fmt.Errorf("judge %s: %w", key, err)
	}
	if !v.Post() {
		return quiet(v.Verdict)
	}
	switch v.Verdict {
	case ledger.VerdictFailed:
		n.Change = "failed"
	case ledger.VerdictFixed:
		n.Change, n.BrokenRuns = "fixed", v.BrokenRuns
		if !v.BrokenSince.IsZero() && run.At.After(v.BrokenSince) {
			n.BrokenFor = run.At.Sub(v.BrokenSince)
		}
	}
	return Decision{State: ledger.Pending}, nil
}
