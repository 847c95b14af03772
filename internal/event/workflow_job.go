package event

import (
	"encoding/json"
	"strconv"
	"strings"
)

type workflowJobPayload struct {
	envelope
	WorkflowJob *struct {
		Name        string `json:"name"`
		RunID       int64  `json:"run_id"`
		RunAttempt  int    `json:"run_attempt"`
		HeadBranch  string `json:"head_branch"`
		Status      string `json:"status"`
		Conclusion  string `json:"conclusion"`
		HTMLURL     string `json:"html_url"`
		StartedAt   Time   `json:"started_at"`
		CompletedAt Time   `json:"completed_at"`
		Steps       []struct {
			Name       string `json:"name"`
			Conclusion string `json:"conclusion"`
		} `json:"steps"`
	} `json:"workflow_job"`
}

// summarizeWorkflowJob records a job under its run ("run:<run_id>") so that
// the run's message can list the jobs that failed. A job never posts on its
// own: the run is what a reader wants to hear about, once.
func summarizeWorkflowJob(body []byte) (Summary, error) {
	var p workflowJobPayload
	if err := decode(body, &p); err != nil {
		return Summary{}, err
	}
	s := p.summary()
	j := p.WorkflowJob
	if j == nil {
		return s, nil
	}
	branch := strings.TrimSpace(j.HeadBranch)
	s.Ref = branch
	s.Branches = branches(branch)
	s.Workflow = strings.TrimSpace(j.Name)
	s.Status = strings.TrimSpace(j.Status)
	s.Conclusion = strings.TrimSpace(j.Conclusion)
	s.URL = strings.TrimSpace(j.HTMLURL)
	if j.RunID != 0 {
		s.Subject = RunSubject(j.RunID)
	}
	if s.Action != "completed" {
		return s, nil
	}
	job := &Notification{
		Kind:    "workflow_job",
		Outcome: OutcomeOf(j.Conclusion),
		Title:   s.Workflow,
		Repo:    s.Repo,
		Branch:  branch,
		Actor:   s.Actor,
		URL:     s.URL,
		Number:  j.RunAttempt,
	}
	for _, st := range j.Steps {
		if o := OutcomeOf(st.Conclusion); o == Failure || o == TimedOut {
			job.Detail = strings.TrimSpace(st.Name)
			break
		}
	}
	if !j.StartedAt.IsZero() && !j.CompletedAt.IsZero() {
		if d := j.CompletedAt.Sub(j.StartedAt.Time); d > 0 {
			job.Duration = d
		}
	}
	s.Kept = job
	return s, nil
}

// RunSubject groups the jobs of one workflow run (every attempt).
func RunSubject(runID int64) string { return "run:" + strconv.FormatInt(runID, 10) }

// JobOf reads back what a job row keeps (see Summary.Kept): the job's name,
// outcome, first failed step (Detail), duration, link and run attempt
// (Number). ok is false for a row that is not a job's.
func JobOf(message []byte) (n Notification, ok bool) {
	if len(message) == 0 || json.Unmarshal(message, &n) != nil || n.Kind != "workflow_job" {
		return Notification{}, false
	}
	return n, true
}
