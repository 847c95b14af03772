package event

import (
	"strings"
)

// statusPayload has no envelope: a status has no action, so none is read.
type statusPayload struct {
	Repository  *repository `json:"repository"`
	Sender      *user       `json:"sender"`
	SHA         string      `json:"sha"`
	Context     string      `json:"context"`
	State       string      `json:"state"`
	TargetURL   string      `json:"target_url"` // null for most statuses
	Description string      `json:"description"`
	Branches    []struct {
		Name string `json:"name"`
	} `json:"branches"`
	Commit *struct {
		HTMLURL string `json:"html_url"`
	} `json:"commit"`
}

func summarizeStatus(body []byte, opts Options) (Summary, error) {
	var p statusPayload
	if err := decode(body, &p); err != nil {
		return Summary{}, err
	}
	s := Summary{
		Repo:  p.Repository.fullName(),
		Actor: p.Sender.login(),
	}
	for _, b := range p.Branches {
		if name := strings.TrimSpace(b.Name); name != "" {
			s.Branches = append(s.Branches, name)
		}
	}
	if len(s.Branches) > 0 {
		s.Ref = s.Branches[0]
	}
	context := strings.TrimSpace(p.Context)
	state := strings.TrimSpace(p.State)
	sha := strings.TrimSpace(p.SHA)
	s.Workflow = context
	s.Status = state
	s.Conclusion = state
	var commitURL string
	if p.Commit != nil {
		commitURL = p.Commit.HTMLURL
	}
	s.URL = firstNonEmpty(p.TargetURL, commitURL)

	var outcome Outcome
	switch strings.ToLower(state) {
	case "success":
		outcome = Success
	case "failure", "error":
		// error means the check could not run; to a reader that is a failure.
		outcome = Failure
	case "pending":
		if !opts.NotifyPending {
			return s, nil
		}
		outcome = Pending
	default:
		return s, nil
	}
	s.Note = &Notification{
		Kind:    "status",
		Outcome: outcome,
		Title:   context,
		Repo:    s.Repo,
		Branch:  s.Ref,
		Actor:   s.Actor,
		SHA:     sha,
		URL:     s.URL,
		Detail:  strings.TrimSpace(p.Description),
	}
	// GitHub re-sends the same status (and repository names are case
	// insensitive), so the same (repo, sha, context, state) posts once.
	s.Key = "status:" + strings.ToLower(s.Repo) + ":" + sha + ":" + context + ":" + state
	// A live message per (commit, context): pending, then its result.
	s.Note.Live = "status:" + strings.ToLower(s.Repo) + ":" + sha + ":" + context
	return s, nil
}
