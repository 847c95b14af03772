package event

import (
	"strconv"
	"strings"
)

type checkSuitePayload struct {
	envelope
	CheckSuite *struct {
		ID         int64  `json:"id"`
		HeadBranch string `json:"head_branch"`
		HeadSHA    string `json:"head_sha"`
		Status     string `json:"status"`
		Conclusion string `json:"conclusion"`
		App        *app   `json:"app"`
		// The pull requests the suite ran for, by number.
		PullRequests []struct {
			Number int `json:"number"`
		} `json:"pull_requests"`
	} `json:"check_suite"`
}

// SuiteLive is the live-message subject of a check suite, and of the
// workflow run and check runs that belong to it.
func SuiteLive(repo string, suiteID int64) string {
	return "suite:" + strings.ToLower(repo) + ":" + strconv.FormatInt(suiteID, 10)
}

func summarizeCheckSuite(body []byte) (Summary, error) {
	var p checkSuitePayload
	if err := decode(body, &p); err != nil {
		return Summary{}, err
	}
	s := p.summary()
	cs := p.CheckSuite
	if cs == nil {
		return s, nil
	}
	name := "checks"
	if cs.App != nil {
		// slug is null in most payloads, and the name is what the checks tab shows.
		name = firstNonEmpty(cs.App.Name, cs.App.Slug, name)
		s.App = name
	}
	branch := strings.TrimSpace(cs.HeadBranch)
	sha := strings.TrimSpace(cs.HeadSHA)

	s.Ref = branch
	s.Workflow = name
	s.Status = strings.TrimSpace(cs.Status)
	s.Conclusion = strings.TrimSpace(cs.Conclusion)
	// A check suite has no page of its own; the commit's checks tab lists it.
	if repoURL := strings.TrimRight(p.Repository.htmlURL(), "/"); repoURL != "" && sha != "" {
		s.URL = repoURL + "/commit/" + sha + "/checks"
	}
	s.Branches = branches(branch)
	s.SuiteID = cs.ID

	if s.Action != "completed" {
		return s, nil
	}
	// Counts and Failed are filled in later from the suite's check runs.
	s.Note = &Notification{
		Kind:    "check_suite",
		Outcome: OutcomeOf(cs.Conclusion),
		Title:   name,
		Repo:    s.Repo,
		Branch:  branch,
		Actor:   s.Actor,
		SHA:     sha,
		URL:     s.URL,
	}
	// Shared with the workflow_run of the same Actions run: post once. With
	// no id the key would join unrelated suites, so there is none.
	if cs.ID != 0 {
		s.Key = "suite:" + strconv.FormatInt(cs.ID, 10)
		s.Note.Live = SuiteLive(s.Repo, cs.ID)
	}
	// CI results on a pull request's head belong in its thread.
	if len(cs.PullRequests) > 0 && cs.PullRequests[0].Number > 0 && s.Repo != "" {
		s.Note.Parent = PRSubject(s.Repo, cs.PullRequests[0].Number)
	}
	return s, nil
}

type checkRunPayload struct {
	envelope
	CheckRun *struct {
		Name        string `json:"name"`
		HeadSHA     string `json:"head_sha"`
		Status      string `json:"status"`
		Conclusion  string `json:"conclusion"`
		HTMLURL     string `json:"html_url"`
		StartedAt   Time   `json:"started_at"`
		CompletedAt Time   `json:"completed_at"`
		App         *app   `json:"app"`
		CheckSuite  *struct {
			ID         int64  `json:"id"`
			HeadBranch string `json:"head_branch"`
			HeadSHA    string `json:"head_sha"`
		} `json:"check_suite"`
	} `json:"check_run"`
}

func summarizeCheckRun(body []byte) (Summary, error) {
	var p checkRunPayload
	if err := decode(body, &p); err != nil {
		return Summary{}, err
	}
	s := p.summary()
	cr := p.CheckRun
	if cr == nil {
		return s, nil
	}
	var (
		suiteID          int64
		branch, suiteSHA string
	)
	if cr.CheckSuite != nil {
		suiteID = cr.CheckSuite.ID
		branch = strings.TrimSpace(cr.CheckSuite.HeadBranch)
		suiteSHA = cr.CheckSuite.HeadSHA
	}
	name := strings.TrimSpace(cr.Name)

	s.Ref = branch
	s.Workflow = name
	if cr.App != nil {
		s.App = firstNonEmpty(cr.App.Name, cr.App.Slug)
	}
	s.Status = strings.TrimSpace(cr.Status)
	s.Conclusion = strings.TrimSpace(cr.Conclusion)
	s.URL = strings.TrimSpace(cr.HTMLURL)
	s.Branches = branches(branch)
	s.SuiteID = suiteID
	// Every check run is kept under its suite, whatever the action, so the
	// suite's message can count them. Without a suite id there is nothing
	// to group by, and "check_suite:0" would lump strangers together.
	if suiteID != 0 {
		s.Subject = "check_suite:" + strconv.FormatInt(suiteID, 10)
	}

	if s.Action != "completed" {
		return s, nil
	}
	// Only a failure is worth saying before the suite completes; every
	// other result waits for the suite's summary.
	var outcome Outcome
	switch strings.ToLower(s.Conclusion) {
	case "failure", "startup_failure":
		outcome = Failure
	case "timed_out":
		outcome = TimedOut
	default:
		return s, nil
	}
	n := &Notification{
		Kind:    "check_run",
		Outcome: outcome,
		Title:   name,
		Repo:    s.Repo,
		Branch:  branch,
		Actor:   s.Actor,
		SHA:     firstNonEmpty(cr.HeadSHA, suiteSHA),
		URL:     s.URL,
	}
	if !cr.StartedAt.IsZero() && !cr.CompletedAt.IsZero() {
		if d := cr.CompletedAt.Sub(cr.StartedAt.Time); d > 0 {
			n.Duration = d
		}
	}
	s.Note = n
	// The first failing run of a suite posts; later ones find the key taken.
	// A live message is the suite's, which the suite's result then updates.
	if suiteID != 0 {
		s.Key = "checkfail:" + strconv.FormatInt(suiteID, 10)
		n.Live = SuiteLive(s.Repo, suiteID)
	}
	return s, nil
}
