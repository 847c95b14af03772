package event

import (
	"path"
	"strconv"
	"strings"
)

type workflowRunPayload struct {
	envelope
	WorkflowRun *struct {
		Name         string `json:"name"`
		DisplayTitle string `json:"display_title"`
		Path         string `json:"path"`
		HeadBranch   string `json:"head_branch"`
		HeadSHA      string `json:"head_sha"`
		Status       string `json:"status"`
		Conclusion   string `json:"conclusion"`
		HTMLURL      string `json:"html_url"`
		ID           int64  `json:"id"`
		RunNumber    int    `json:"run_number"`
		RunAttempt   int    `json:"run_attempt"`
		WorkflowID   int64  `json:"workflow_id"`
		PullRequests []struct {
			Number int `json:"number"`
		} `json:"pull_requests"`
		CheckSuiteID int64 `json:"check_suite_id"`
		RunStartedAt Time  `json:"run_started_at"`
		UpdatedAt    Time  `json:"updated_at"`
		Actor        *user `json:"actor"`
		Triggering   *user `json:"triggering_actor"`
		HeadCommit   *struct {
			Message string `json:"message"`
		} `json:"head_commit"`
	} `json:"workflow_run"`
	Workflow *struct {
		Name string `json:"name"`
	} `json:"workflow"`
}

func summarizeWorkflowRun(body []byte) (Summary, error) {
	var p workflowRunPayload
	if err := decode(body, &p); err != nil {
		return Summary{}, err
	}
	s := p.summary()
	run := p.WorkflowRun
	if run == nil {
		return s, nil
	}

	// workflow_run.name is "" in real payloads; the workflow object and the
	// file name are what a reader knows the workflow by.
	var workflowName string
	if p.Workflow != nil {
		workflowName = p.Workflow.Name
	}
	name := firstNonEmpty(run.Name, workflowName, workflowFile(run.Path), run.DisplayTitle)

	branch := strings.TrimSpace(run.HeadBranch)
	s.Ref = branch
	s.Workflow = name
	s.WorkflowPath = strings.TrimSpace(run.Path)
	s.Status = strings.TrimSpace(run.Status)
	s.Conclusion = strings.TrimSpace(run.Conclusion)
	s.URL = strings.TrimSpace(run.HTMLURL)
	s.Branches = branches(branch)
	s.SuiteID = run.CheckSuiteID
	s.Run = &RunInfo{ID: run.ID, Attempt: max(run.RunAttempt, 1), Number: run.RunNumber, WorkflowID: run.WorkflowID, At: run.UpdatedAt.Time}
	for _, pr := range run.PullRequests {
		if pr.Number > 0 {
			s.Run.PullRequests = append(s.Run.PullRequests, pr.Number)
		}
	}
	// Whoever re-ran a workflow is who the reader wants to see, not the
	// author of the original run.
	s.Actor = firstNonEmpty(run.Triggering.login(), run.Actor.login(), s.Actor)

	// A requested run can already carry status "completed" (approval
	// required); only the completed action is a result. The others are
	// interim: only a live message shows them.
	outcome := OutcomeOf(run.Conclusion)
	switch s.Action {
	case "completed":
	case "requested":
		outcome = Queued
	case "in_progress":
		outcome = InProgress
	default:
		return s, nil
	}
	n := &Notification{
		Kind:    "workflow_run",
		Outcome: outcome,
		Interim: s.Action != "completed",
		Title:   name,
		Repo:    s.Repo,
		Branch:  branch,
		Actor:   s.Actor,
		SHA:     strings.TrimSpace(run.HeadSHA),
		URL:     s.URL,
		Number:  run.RunNumber,
	}
	if run.HeadCommit != nil {
		n.Detail = firstLine(run.HeadCommit.Message)
	}
	// A run on its way has no duration yet.
	if !n.Interim && !run.RunStartedAt.IsZero() && !run.UpdatedAt.IsZero() {
		if d := run.UpdatedAt.Sub(run.RunStartedAt.Time); d > 0 {
			n.Duration = d
		}
	}
	// One live message per run attempt: keyed by its check suite (each
	// attempt has its own), which its check runs share, so a failing job
	// said early updates the same message.
	switch {
	case run.CheckSuiteID != 0:
		n.Live = SuiteLive(s.Repo, run.CheckSuiteID)
	case run.ID != 0:
		n.Live = "run:" + strings.ToLower(s.Repo) + ":" + strconv.FormatInt(run.ID, 10) + ":" + strconv.Itoa(s.Run.Attempt)
	}
	if len(s.Run.PullRequests) > 0 && s.Repo != "" {
		n.Parent = PRSubject(s.Repo, s.Run.PullRequests[0])
	}
	s.Note = n
	// The check suite of the same Actions run uses the same key, so the run
	// is posted once whichever delivery arrives first. An interim state
	// claims nothing: it must not silence the result.
	if run.CheckSuiteID != 0 && !n.Interim {
		s.Key = "suite:" + strconv.FormatInt(run.CheckSuiteID, 10)
	}
	return s, nil
}

// workflowFile is the base name of a workflow's file (".github/workflows/
// test.yml" → "test.yml"), or "" when there is no path.
func workflowFile(p string) string {
	p = strings.TrimRight(strings.TrimSpace(p), "/")
	if p == "" {
		return ""
	}
	return path.Base(p)
}
