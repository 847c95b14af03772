package ledger

import (
	"encoding/json"
	"time"
)

// StreakRun is one result judged by NOTIFY_MODE=changes against the
// previous results of the same subject (a workflow on a branch, a status
// context on a branch, a check app on a branch).
type StreakRun struct {
	// ID names the run (a workflow run's id, a commit's SHA, a check
	// suite's id); Attempt tells its re-runs apart. A result for the same
	// ID is the same run: a re-run does not count as one more broken run.
	ID      string `json:"id"`
	Attempt int    `json:"attempt,omitempty"`
	// Number orders runs (a workflow run's run_number, a check suite's
	// id); 0 when there is no order (commit statuses).
	Number int64 `json:"number,omitempty"`
	// Result is Pass, Fail, Cancelled, Other, or "" for a run that has
	// started but not completed (it only tells later runs they are older).
	Result string    `json:"result,omitempty"`
	At     time.Time `json:"at"`
}

// Results a StreakRun can have.
const (
	Pass      = "pass"
	Fail      = "fail"
	Cancelled = "cancelled"
	Other     = "other" // skipped, neutral, stale, action required: never posted
)

// Verdicts: what a changes-mode notification says, or why it stays quiet.
const (
	VerdictFailed       = "failed"        // a new failure: post
	VerdictFixed        = "fixed"         // a success after failures: post
	VerdictCancelled    = "cancelled"     // the newest run was cancelled: post
	VerdictStillFailing = "still failing" // quiet, counted
	VerdictPassing      = "still passing" // quiet
	VerdictSuperseded   = "superseded"    // cancelled, a newer run exists: quiet
	VerdictOlder        = "older"         // a newer run was judged already: quiet
	VerdictNoVerdict    = "no verdict"    // skipped, neutral, ...: quiet
	VerdictStarted      = "started"       // not completed: quiet
)

// StreakVerdict is what Streak decided for a run.
type StreakVerdict struct {
	Verdict string `json:"verdict"`
	// On VerdictFixed: when the subject first failed, and how many runs
	// failed in a row.
	BrokenSince time.Time `json:"broken_since,omitzero"`
	BrokenRuns  int       `json:"broken_runs,omitempty"`
}

// Post reports whether the verdict is worth a message.
func (v StreakVerdict) Post() bool {
	switch v.Verdict {
	case VerdictFailed, VerdictFixed, VerdictCancelled:
		return true
	}
	return false
}

// StreakState is what a backend keeps per streak key, as JSON; backends
// store it whole and leave its meaning to Judge, so that they cannot
// disagree about it.
type StreakState struct {
	// The last run judged, and the verdict it got: a redelivery of it gets
	// the same verdict and changes nothing.
	Run     StreakRun     `json:"run"`
	Verdict StreakVerdict `json:"verdict"`
	// Newest is the highest Number seen, completed or not.
	Newest int64 `json:"newest,omitempty"`
	// Last is the last Pass or Fail; "" before the first.
	Last        string    `json:"last,omitempty"`
	BrokenSince time.Time `json:"broken_since,omitzero"`
	BrokenRuns  int       `json:"broken_runs,omitempty"`
}

// Judge decides run against the state of its streak and returns the new
// state. It is pure: every backend calls it inside its own atomic
// read-modify-write, which is what makes Streak safe across replicas.
func Judge(st StreakState, run StreakRun) (StreakState, StreakVerdict) {
	if run.Result == "" {
		st.Newest = max(st.Newest, run.Number)
		return st, StreakVerdict{Verdict: VerdictStarted}
	}
	same := st.Run.ID != "" && st.Run.ID == run.ID
	if same && st.Run.Attempt == run.Attempt && st.Run.Result == run.Result {
		return st, st.Verdict // a redelivery: the same answer, nothing counted twice
	}
	// A run older than one already seen, or an earlier attempt of the run
	// just judged, arrived late: the branch has moved on.
	if !same && run.Number > 0 && run.Number < st.Newest || same && run.Attempt < st.Run.Attempt {
		if run.Result == Cancelled {
			return st, StreakVerdict{Verdict: VerdictSuperseded}
		}
		return st, StreakVerdict{Verdict: VerdictOlder}
	}
	st.Newest = max(st.Newest, run.Number)
	var v StreakVerdict
	switch run.Result {
	case Pass:
		if st.Last == Fail {
			v = StreakVerdict{Verdict: VerdictFixed, BrokenSince: st.BrokenSince, BrokenRuns: st.BrokenRuns}
		} else {
			v = StreakVerdict{Verdict: VerdictPassing}
		}
		st.Last, st.BrokenSince, st.BrokenRuns = Pass, time.Time{}, 0
	case Fail:
		switch {
		case st.Last != Fail:
			v = StreakVerdict{Verdict: VerdictFailed}
			st.Last, st.BrokenSince, st.BrokenRuns = Fail, run.At, 1
		case same:
			// A re-run that failed again is the same broken run.
			v = StreakVerdict{Verdict: VerdictStillFailing}
		default:
			v = StreakVerdict{Verdict: VerdictStillFailing}
			st.BrokenRuns++
		}
	case Cancelled:
		v = StreakVerdict{Verdict: VerdictCancelled}
	default:
		v = StreakVerdict{Verdict: VerdictNoVerdict}
	}
	st.Run, st.Verdict = run, v
	return st, v
}

// MarshalStreak and UnmarshalStreak are the stored form of a StreakState;
// an empty or absent row is the zero state.
func MarshalStreak(st StreakState) ([]byte, error) { return json.Marshal(st) }

func UnmarshalStreak(b []byte) (StreakState, error) {
	var st StreakState
	if len(b) == 0 {
		return st, nil
	}
	err := json.Unmarshal(b, &st)
	return st, err
}
