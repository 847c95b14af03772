package event

import "time"

// Options are the settings that change what a summarizer says.
type Options struct {
	NotifyPending bool // also notify pending commit statuses
}

// Summary is what one delivery comes down to: the seed columns the ledger
// keeps, what the filters look at, and the notification, if any.
type Summary struct {
	Action string

	// Ledger columns (DESIGN.md seed schema).
	Repo       string // owner/name
	Ref        string // the branch; a pull request's base branch; a status's first branch
	Workflow   string // workflow name, check name, status context
	Status     string // GitHub's status/state field
	Conclusion string
	URL        string // the html link a person would open

	// Branches the branch filter looks at: one for most events, several for
	// a commit status (any may match), none when the event has no branch.
	Branches []string
	// WorkflowPath is a workflow run's file (.github/workflows/ci.yml), for
	// the workflow filters.
	WorkflowPath string
	// Actor is the GitHub login that caused the event.
	Actor string
	// App is the app behind a check suite or check run ("GitHub Actions").
	App string

	// Key makes the message one of a kind (see ledger.Delivery.Key); empty
	// when any number of such messages may be posted.
	Key string
	// Subject groups deliveries for later aggregation (check runs of a
	// suite: "check_suite:<id>").
	Subject string
	// SuiteID is the check suite a check_suite, check_run or workflow_run
	// delivery belongs to (0 when none).
	SuiteID int64

	// Run is a workflow run's identity, for the jobs and change judgements
	// that look it up; nil for other events. It is not stored.
	Run *RunInfo

	// Kept is what a row that posts nothing still keeps for a later
	// delivery to read (a workflow_job: its failed step and duration). It
	// is stored in the row's Message column, which the worker reads only
	// for Pending rows, and it is a Notification so that an operator's
	// explicit "ledger retry" of such a row still posts something sensible.
	Kept *Notification

	// Note is the message to post; nil when there is nothing to say (an
	// unsupported event or action), and the delivery is recorded as ignored.
	Note *Notification
}

// RunInfo identifies one workflow run.
type RunInfo struct {
	ID      int64
	Attempt int
	Number  int
	// PullRequests are the numbers of the pull requests the run is for
	// (GitHub sends numbers only, not authors).
	PullRequests []int
	// WorkflowID tells workflows apart when two share a name.
	WorkflowID int64
	// At is when the run was last updated (its completion, for a
	// completed run).
	At time.Time
}
