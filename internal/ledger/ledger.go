// Package ledger records each GitHub delivery once. A row is both the record
// of a delivery (deduplicated by its GUID) and, while its State is Pending,
// the outbox entry for the Slack message it owes.
//
// Backends live in sub-packages (sqlite, file); every one passes the
// conformance suite in ledgertest.
package ledger

import (
	"context"
	"errors"
	"time"
)

// State is where a delivery stands.
type State string

const (
	Pending   State = "pending"   // a Slack message is owed
	Delivered State = "delivered" // Slack accepted it (or it was logged, in log-only mode)
	Failed    State = "failed"    // the worker gave up; LastError says why
	Filtered  State = "filtered"  // a repository or branch filter kept it quiet
	Ignored   State = "ignored"   // nothing to say, or already said
)

// Finished reports whether the row owes nothing more; only finished rows are
// ever pruned.
func (s State) Finished() bool { return s != Pending }

// Valid reports whether s is one of the states above.
func (s State) Valid() bool {
	switch s {
	case Pending, Delivered, Failed, Filtered, Ignored:
		return true
	}
	return false
}

// Delivery is one row. The first group of fields is DESIGN.md's seed schema.
type Delivery struct {
	GUID       string    `json:"guid"`
	Event      string    `json:"event"`
	ReceivedAt time.Time `json:"received_at"`
	Repo       string    `json:"repo,omitempty"`
	Ref        string    `json:"ref,omitempty"`
	Workflow   string    `json:"workflow,omitempty"`
	Status     string    `json:"status,omitempty"`
	Conclusion string    `json:"conclusion,omitempty"`
	URL        string    `json:"url,omitempty"`
	Attempts   int       `json:"attempts,omitempty"`
	LastError  string    `json:"last_error,omitempty"`

	Action string `json:"action,omitempty"`
	State  State  `json:"state"`

	// Key, when set, makes this delivery's message one of a kind: only the
	// first row recorded with a given key stays Pending, every later one is
	// recorded as Ignored. It is how "already said" is decided atomically
	// (a repeated commit status, the check suite of a posted workflow run).
	Key string `json:"key,omitempty"`
	// Subject groups rows that belong together (the check runs of one check
	// suite), so that a later delivery can summarize them.
	Subject string `json:"subject,omitempty"`
	// Message is the summarized notification the worker renders (JSON).
	Message []byte `json:"message,omitempty"`
	// Destination is the name of the route whose Slack destination the
	// message goes to; "" is the default one (SLACK_WEBHOOK_URL, or the
	// log in log-only mode). Each destination has its own worker, so the
	// worker of one reads only its own rows.
	Destination string `json:"destination,omitempty"`
	// NextAttemptAt is when a Pending row may next be tried.
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
	// Seq orders rows by arrival; the backend assigns it.
	Seq int64 `json:"seq"`
}

// Delivered is the seed schema's flag: the message reached Slack.
func (d *Delivery) Delivered() bool { return d.State == Delivered }

// Result says what Record did.
type Result int

const (
	// Recorded: the row is new and stored with the state it was given.
	Recorded Result = iota
	// Duplicate: a row with this GUID already exists; nothing changed.
	Duplicate
	// KeyTaken: the row is new, but another row holds its Key, so it was
	// stored as Ignored.
	KeyTaken
)

// Stats is what health reports.
type Stats struct {
	Size           int
	Pending        int
	Failed         int
	LastDeliveryAt time.Time // zero when the ledger is empty
}

// Store is the full ledger contract. Consumers declare the small part they
// use; this interface is for opening a backend and for the conformance suite.
type Store interface {
	// Record inserts d unless its GUID is present, atomically under any
	// concurrency. It sets d.Seq (never reused, even after pruning), and on
	// KeyTaken sets d.State to Ignored and clears d.Key: only the holder
	// holds a key, so it is free again once the holder is pruned. After the
	// write, the oldest finished rows (by Seq) are pruned while there are
	// more rows than the store's limit; the row just written is never one
	// of them, so a redelivery of it is still a Duplicate.
	Record(ctx context.Context, d *Delivery) (Result, error)
	// Due returns up to limit Pending rows of destination with a Seq
	// greater than after whose NextAttemptAt is not after now, in order of
	// arrival. The cursor lets the worker walk a backlog page by page
	// without loading it whole and without seeing the rows it just
	// rescheduled again.
	Due(ctx context.Context, destination string, now time.Time, after int64, limit int) ([]Delivery, error)
	// Finish ends a Pending row as Delivered or Failed.
	Finish(ctx context.Context, guid string, state State, attempts int, lastErr string) error
	// Reschedule keeps a row Pending and sets when it is next tried.
	Reschedule(ctx context.Context, guid string, attempts int, lastErr string, next time.Time) error
	// Subject returns the rows recorded with that subject, in order of arrival.
	Subject(ctx context.Context, subject string) ([]Delivery, error)
	// Get returns one row, or ErrNotFound.
	Get(ctx context.Context, guid string) (Delivery, error)
	Stats(ctx context.Context) (Stats, error)
	// List returns up to limit rows, newest first; state "" means any.
	List(ctx context.Context, state State, limit int) ([]Delivery, error)
	// Requeue makes a row that has a message Pending again, due now, with
	// its attempts and last error cleared (an operator's retry). A row
	// without a message (filtered, ignored) is ErrNothingToPost.
	Requeue(ctx context.Context, guid string) error
	// Streak judges run against the streak kept under key (NOTIFY_MODE=
	// changes) and stores the new state, atomically under any concurrency
	// and across replicas: read, Judge, write in one transaction. The
	// state survives restarts and is never pruned with the deliveries.
	// Judging the same run (ID, Attempt, Result) again returns the verdict
	// it got before and changes nothing, so a redelivery counts once.
	Streak(ctx context.Context, key string, run StreakRun) (StreakVerdict, error)
	// Live returns the live message kept under key, or ErrNotFound.
	Live(ctx context.Context, key string) (Live, error)
	// SetLive keeps m under key, replacing what was there. Live messages
	// survive restarts and are not pruned with deliveries; SetLive forgets
	// those not set for LiveTTL before m.UpdatedAt, so the table holds
	// about a month of subjects, not every one ever seen.
	SetLive(ctx context.Context, key string, m Live) error
	Close() error
}

// LiveTTL is how long a live message is kept after it was last set: a
// subject quiet for longer (a pull request reopened after months) starts a
// new message.
const LiveTTL = 30 * 24 * time.Hour

// Live is the Slack message that stands for one subject (a workflow run, a
// check suite, a pull request) at one destination, when the destination
// posts with a bot token: later events of the subject update it, or reply
// in its thread, instead of posting again.
type Live struct {
	Channel string `json:"channel"`
	TS      string `json:"ts"` // Slack's ID of the message
	// Final says the subject's last state was posted (a completed run): an
	// earlier state that GitHub delivers late must not overwrite it.
	Final     bool      `json:"final,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ErrNothingToPost is returned by Requeue for a row that owes no message.
var ErrNothingToPost = errors.New("ledger: delivery has no message to post")

// ErrNotFound is returned by Get, Finish and Reschedule for an unknown GUID,
// and by Live for an unknown key.
var ErrNotFound = errors.New("ledger: no such delivery")

// ErrNotPending is returned by Finish and Reschedule when the row is finished.
var ErrNotPending = errors.New("ledger: delivery is not pending")
