package event

import "time"

// Outcome is what happened, in the words a message leads with. Each kind of
// event uses a few of them; the renderer picks the emoji and verb.
type Outcome string

const (
	// CI results (workflow runs, check suites and runs, commit statuses).
	Success        Outcome = "success"
	Failure        Outcome = "failure"
	TimedOut       Outcome = "timed_out"
	Cancelled      Outcome = "cancelled"
	Skipped        Outcome = "skipped"
	Neutral        Outcome = "neutral"
	ActionRequired Outcome = "action_required"
	Stale          Outcome = "stale"
	Pending        Outcome = "pending"
	// A workflow run on its way: shown only by a live message, which its
	// result later replaces.
	Queued     Outcome = "queued"
	InProgress Outcome = "in_progress"

	// Pull request activity.
	Opened         Outcome = "opened"
	Reopened       Outcome = "reopened"
	ReadyForReview Outcome = "ready_for_review"
	Synchronized   Outcome = "synchronize"
	Merged         Outcome = "merged"
	Closed         Outcome = "closed"
)

// Notification is everything a Slack message says about one delivery. It is
// made from the payload on the request path, stored in the ledger as JSON
// (the outbox row) and rendered by the worker, so it holds only summarized
// fields: never the raw payload, never anything secret.
type Notification struct {
	Kind    string  `json:"kind"` // the GitHub event: workflow_run, check_suite, ...
	Outcome Outcome `json:"outcome"`

	// Title names the subject: the workflow, the check or app, the status
	// context, or the pull request title.
	Title  string `json:"title"`
	Repo   string `json:"repo"`
	Branch string `json:"branch,omitempty"`
	Actor  string `json:"actor,omitempty"`
	SHA    string `json:"sha,omitempty"`
	URL    string `json:"url,omitempty"`
	Number int    `json:"number,omitempty"` // run number or pull request number

	// Detail is one line of free text: the head commit's first line, a
	// status description.
	Detail   string        `json:"detail,omitempty"`
	Duration time.Duration `json:"duration,omitempty"`

	// Pull requests.
	Author string `json:"author,omitempty"` // who opened it (Actor is who acted)
	Base   string `json:"base,omitempty"`
	Head   string `json:"head,omitempty"`

	// Check suites: check runs seen, by conclusion, and the failed ones' names.
	Counts map[Outcome]int `json:"counts,omitempty"`
	Failed []string        `json:"failed,omitempty"`

	// Jobs are a failed workflow run's failed jobs (at most MaxJobs), from
	// the workflow_job deliveries recorded under the run.
	Jobs []Job `json:"jobs,omitempty"`
	// MoreJobs counts failed jobs beyond Jobs.
	MoreJobs int `json:"more_jobs,omitempty"`

	// Mentions are Slack user IDs resolved from SLACK_MENTIONS when the
	// message was decided; the renderer writes them as <@ID>. They never
	// come from GitHub text.
	Mentions []string `json:"mentions,omitempty"`

	// Change is set in NOTIFY_MODE=changes: "failed" (a new failure) or
	// "fixed" (a success after failures).
	Change string `json:"change,omitempty"`
	// BrokenFor and BrokenRuns say, on a "fixed" message, how long and for
	// how many runs the subject was failing.
	BrokenFor  time.Duration `json:"broken_for,omitempty"`
	BrokenRuns int           `json:"broken_runs,omitempty"`

	// Live messages (routes that post with SLACK_BOT_TOKEN). Live names the
	// subject this message stands for, so that a later event of the same
	// subject updates it in place ("suite:<repo>:<id>" for an Actions run
	// and its checks); "" means a message of its own. Parent names the
	// subject whose message it replies under, in a thread ("pr:<repo>#<n>").
	Live   string `json:"live,omitempty"`
	Parent string `json:"parent,omitempty"`
	// Interim marks a state on the way (queued, in progress). It is posted
	// only where it can be updated later, and never over a result.
	Interim bool `json:"interim,omitempty"`
}

// MaxJobs is how many failed jobs a message lists by name.
const MaxJobs = 5

// Job is one failed job of a workflow run.
type Job struct {
	Name     string        `json:"name"`
	Step     string        `json:"step,omitempty"` // the first failed step
	Duration time.Duration `json:"duration,omitempty"`
	URL      string        `json:"url,omitempty"`
}
