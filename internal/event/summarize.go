// Package event turns a verified GitHub webhook delivery into a Summary: the
// columns the ledger keeps, what the filters look at, and the Slack
// notification, if any. It reads only the fields it uses, through small
// hand-written structs, so what GitHub adds elsewhere in a payload cannot
// break it.
package event

import (
	"fmt"
	"strings"
)

// Summarize reads body, the JSON payload of a delivery whose X-GitHub-Event
// header is event. Supported events (workflow_run, check_suite, check_run,
// pull_request, status) get their own rules; any other event gets a generic
// summary without a Note.
//
// The error is non-nil only when body does not decode into the fields read
// (a field of the wrong JSON type, or not JSON at all); missing fields just
// leave their part of the Summary empty.
//
// Key is set only together with Note: the ledger keeps the first row recorded
// with a key as the one that posts, so a row that will be ignored anyway must
// not claim it (a requested workflow_run would otherwise silence its suite).
func Summarize(event string, body []byte, opts Options) (Summary, error) {
	var (
		s   Summary
		err error
	)
	switch event {
	case "workflow_run":
		s, err = summarizeWorkflowRun(body)
	case "workflow_job":
		s, err = summarizeWorkflowJob(body)
	case "check_suite":
		s, err = summarizeCheckSuite(body)
	case "check_run":
		s, err = summarizeCheckRun(body)
	case "pull_request":
		s, err = summarizePullRequest(body)
	case "status":
		s, err = summarizeStatus(body, opts)
	default:
		s, err = summarizeOther(body)
	}
	if err != nil {
		return Summary{}, fmt.Errorf("malformed %s payload: %w", event, err)
	}
	return s, nil
}

// The parts every payload shares.
type (
	user struct {
		Login string `json:"login"`
	}
	repository struct {
		FullName string `json:"full_name"`
		HTMLURL  string `json:"html_url"`
	}
	app struct {
		Name string `json:"name"`
		Slug string `json:"slug"`
	}
	envelope struct {
		Action     string      `json:"action"`
		Repository *repository `json:"repository"`
		Sender     *user       `json:"sender"`
	}
)

func (u *user) login() string {
	if u == nil {
		return ""
	}
	return strings.TrimSpace(u.Login)
}

func (r *repository) fullName() string {
	if r == nil {
		return ""
	}
	return strings.TrimSpace(r.FullName)
}

func (r *repository) htmlURL() string {
	if r == nil {
		return ""
	}
	return strings.TrimSpace(r.HTMLURL)
}

func (e *envelope) action() string { return strings.TrimSpace(e.Action) }

// summary is what every event says of itself: its action, repository and
// sender.
func (e *envelope) summary() Summary {
	return Summary{Action: e.action(), Repo: e.Repository.fullName(), Actor: e.Sender.login()}
}

// firstNonEmpty returns the first of vs that is not blank, trimmed.
func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}

// branches is the branch filter's list for an event with a single branch:
// none at all when the branch is unknown, so that the filter treats the
// event as branchless rather than as being on a branch named "".
func branches(b string) []string {
	if b == "" {
		return nil
	}
	return []string{b}
}

// firstLine is the head commit's subject: what a reader recognizes a commit by.
func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

// OutcomeOf maps a CI conclusion (workflow run, check suite, check run) to
// an Outcome. startup_failure is a failure to the reader; anything
// unknown reads as neutral rather than as a failure nobody can explain.
func OutcomeOf(c string) Outcome {
	switch strings.ToLower(strings.TrimSpace(c)) {
	case "success":
		return Success
	case "failure", "startup_failure":
		return Failure
	case "timed_out":
		return TimedOut
	case "cancelled":
		return Cancelled
	case "skipped":
		return Skipped
	case "neutral":
		return Neutral
	case "action_required":
		return ActionRequired
	case "stale":
		return Stale
	default:
		return Neutral
	}
}
