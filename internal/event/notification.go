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
	Base string `json:"base,omitempty"`
	Head string `json:"head,omitempty"`

	// Check suites: check runs seen, by conclusion, and the failed ones' names.
	Counts map[Outcome]int `json:"counts,omitempty"`
	Failed []string        `json:"failed,omitempty"`
}
