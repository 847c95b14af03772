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
	// required); only the completed action is a result.
	if s.Action != "completed" {
		return s, nil
	}
	n := &Notification{
		Kind:    "workflow_run",
		Outcome: OutcomeOf(run.Conclusion),
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
	if !run.RunStartedAt.IsZero() && !run.UpdatedAt.IsZero() {
		if d := run.UpdatedAt.Sub(run.RunStartedAt.Time); d > 0 {
			n.Duration = d
		}
	}
	s.Note = n
	// The check suite of the same Actions run uses the same key, so the run
	// is posted once whichever delivery arrives first.
	if run.CheckSuiteID != 0 {
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
