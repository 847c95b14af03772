package event

import (
	"strconv"
	"strings"
)

type prBranch struct {
	Ref   string      `json:"ref"`
	Label string      `json:"label"`
	SHA   string      `json:"sha"`
	Repo  *repository `json:"repo"`
}

type pullRequestPayload struct {
	envelope
	Number      int `json:"number"`
	PullRequest *struct {
		Number   int      `json:"number"`
		Title    string   `json:"title"`
		State    string   `json:"state"`
		Merged   bool     `json:"merged"`
		HTMLURL  string   `json:"html_url"`
		User     *user    `json:"user"`
		MergedBy *user    `json:"merged_by"`
		Base     prBranch `json:"base"`
		Head     prBranch `json:"head"`
	} `json:"pull_request"`
}

func summarizePullRequest(body []byte) (Summary, error) {
	var p pullRequestPayload
	if err := decode(body, &p); err != nil {
		return Summary{}, err
	}
	s := p.summary()
	pr := p.PullRequest
	if pr == nil {
		return s, nil
	}
	base := strings.TrimSpace(pr.Base.Ref)
	state := strings.TrimSpace(pr.State)
	merged := pr.Merged && state == "closed"

	s.Ref = base
	s.Branches = branches(base)
	s.Status = state
	if merged {
		s.Conclusion = "merged"
	}
	s.URL = strings.TrimSpace(pr.HTMLURL)

	number := pr.Number
	if number == 0 {
		number = p.Number
	}
	author := pr.User.login()
	// Every delivery of a pull request is kept under it, so that a failing
	// workflow run for the PR (whose payload has only the PR's number) can
	// mention the PR's author, read from the Author of a posted message.
	if number > 0 && s.Repo != "" {
		s.Subject = PRSubject(s.Repo, number)
	}

	var outcome Outcome
	actor := s.Actor
	switch s.Action {
	case "opened":
		outcome, actor = Opened, firstNonEmpty(pr.User.login(), actor)
	case "reopened":
		outcome, actor = Reopened, firstNonEmpty(pr.User.login(), actor)
	case "ready_for_review":
		outcome, actor = ReadyForReview, firstNonEmpty(pr.User.login(), actor)
	case "synchronize":
		outcome = Synchronized
	case "closed":
		if pr.Merged {
			outcome, actor = Merged, firstNonEmpty(pr.MergedBy.login(), actor)
		} else {
			outcome = Closed
		}
	default:
		return s, nil
	}
	// Branch stays empty: Base and Head say it, as "base ← head".
	s.Note = &Notification{
		Kind:    "pull_request",
		Outcome: outcome,
		Title:   strings.TrimSpace(pr.Title),
		Repo:    s.Repo,
		Actor:   actor,
		SHA:     strings.TrimSpace(pr.Head.SHA),
		URL:     s.URL,
		Number:  number,
		Author:  author,
		Base:    base,
		Head:    headName(pr.Head, pr.Base.Repo.fullName(), s.Repo),
	}
	// Where messages are live, a pull request's first message starts a
	// thread and its later activity replies in it.
	if s.Subject != "" {
		s.Note.Parent = s.Subject
	}
	return s, nil
}

// headName is the head branch as a reader of the base repository knows it:
// a bare branch name when it lives there, owner:branch when it comes from a
// fork (where a bare name would point at the wrong, or no, branch). A head
// repo of null is a deleted fork.
func headName(head prBranch, baseRepo, repo string) string {
	ref := strings.TrimSpace(head.Ref)
	label := strings.TrimSpace(head.Label)
	base := firstNonEmpty(baseRepo, repo)
	sameRepo := head.Repo != nil && (base == "" || strings.EqualFold(head.Repo.fullName(), base))
	if sameRepo || label == "" {
		return ref
	}
	return label
}

// PRSubject groups the deliveries of one pull request. Repository names are
// case-insensitive.
func PRSubject(repo string, number int) string {
	return "pr:" + strings.ToLower(repo) + "#" + strconv.Itoa(number)
}
