package event

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// payloadDir is the shared corpus of real GitHub payloads, kept outside the
// repository (see DESIGN.md, "Tests").
const payloadDir = "../../../shared/github-payloads"

type indexEntry struct {
	event, action, repo string
}

// readIndex maps each payload file (relative to payloadDir) to its INDEX.tsv row.
func readIndex(t testing.TB) map[string]indexEntry {
	t.Helper()
	f, err := os.Open(filepath.Join(payloadDir, "INDEX.tsv"))
	if err != nil {
		t.Fatalf("the real payload corpus is required: %v", err)
	}
	defer f.Close()
	idx := map[string]indexEntry{}
	sc := bufio.NewScanner(f)
	header := true
	for sc.Scan() {
		if header {
			header = false
			continue
		}
		if sc.Text() == "" {
			continue
		}
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) < 5 {
			t.Fatalf("INDEX.tsv: short row %q", sc.Text())
		}
		idx[cols[2]] = indexEntry{event: cols[0], action: cols[1], repo: cols[4]}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return idx
}

// payloadFiles lists every payload file, relative to payloadDir, with forward
// slashes as INDEX.tsv writes them.
func payloadFiles(t testing.TB) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(payloadDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".json") {
			return nil
		}
		rel, err := filepath.Rel(payloadDir, p)
		if err != nil {
			return err
		}
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatalf("the real payload corpus is required: %v", err)
	}
	return files
}

func readPayload(t testing.TB, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(payloadDir, filepath.FromSlash(file)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// eventOf is the X-GitHub-Event a payload file was sent with: its directory.
func eventOf(file string) string {
	return strings.SplitN(file, "/", 2)[0]
}

// The real payloads that say something; every other one must be quiet.
var notifyingPayloads = map[string]bool{
	"workflow_run/completed.payload.json":                          true,
	"workflow_run/completed.with-pull-requests.payload.json":       true,
	"check_suite/completed.1.payload.json":                         true,
	"check_suite/completed.payload.json":                           true,
	"check_suite/completed.with-organization.payload.json":         true,
	"check_run/completed.1.payload.json":                           true, // the only failing one
	"pull_request/closed.payload.json":                             true,
	"pull_request/closed.with-organization.payload.json":           true,
	"pull_request/opened.payload.json":                             true,
	"pull_request/opened.with-null-body.json":                      true,
	"pull_request/opened.with-organization.payload.json":           true,
	"pull_request/ready_for_review.payload.json":                   true,
	"pull_request/ready_for_review.with-installation.payload.json": true,
	"pull_request/ready_for_review.with-organization.payload.json": true,
	"pull_request/reopened.payload.json":                           true,
	"pull_request/reopened.with-organization.payload.json":         true,
	"pull_request/synchronize.payload.json":                        true,
	"status/payload.json":                                          true,
	"status/with-author-committer-null.payload.json":               true,
	"status/with-installation.payload.json":                        true,
}

func TestSummarizeRealPayloads(t *testing.T) {
	t.Parallel()
	idx := readIndex(t)
	files := payloadFiles(t)
	if len(files) != len(idx) {
		t.Errorf("%d payload files, %d INDEX.tsv rows", len(files), len(idx))
	}
	for _, file := range files {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			want, ok := idx[file]
			if !ok {
				t.Fatalf("%s is not in INDEX.tsv", file)
			}
			event := eventOf(file)
			if event != want.event {
				t.Fatalf("directory says %q, INDEX.tsv says %q", event, want.event)
			}
			s, err := Summarize(event, readPayload(t, file), Options{})
			if err != nil {
				t.Fatalf("Summarize: %v", err)
			}
			if s.Repo != want.repo {
				t.Errorf("Repo = %q, want %q", s.Repo, want.repo)
			}
			if s.Action != want.action {
				t.Errorf("Action = %q, want %q", s.Action, want.action)
			}
			// An interim note (a run on its way) is shown only by a live
			// message; it is not something to say on its own.
			if got := s.Note != nil && !s.Note.Interim; got != notifyingPayloads[file] {
				t.Errorf("Note present = %v, want %v", got, notifyingPayloads[file])
			}
			if s.Note != nil && s.Note.Interim && (event != "workflow_run" || s.Action == "completed") {
				t.Errorf("interim note for %s %s; only runs on their way are interim", event, s.Action)
			}
			if s.Note != nil {
				if s.Note.Kind != event {
					t.Errorf("Note.Kind = %q, want %q", s.Note.Kind, event)
				}
				if s.Note.Repo != s.Repo {
					t.Errorf("Note.Repo = %q, want %q", s.Note.Repo, s.Repo)
				}
				// The ledger stores the Note as JSON; it must survive that.
				if _, err := json.Marshal(s.Note); err != nil {
					t.Errorf("marshal Note: %v", err)
				}
			}
			if s.Key != "" && s.Note == nil {
				t.Errorf("Key %q without a Note would claim the key for an ignored row", s.Key)
			}
		})
	}
}

// TestSummarizeRealPayloadsExact pins every field for one real payload of
// each supported event.
func TestSummarizeRealPayloadsExact(t *testing.T) {
	t.Parallel()
	const (
		wrSHA = "3484a3fb816e0859fd6e1cea078d76385ff50625"
		csSHA = "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
		stSHA = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
		prURL = "https://github.com/Codertocat/Hello-World/pull/2"
		title = "Update the README with new information."
	)
	tests := []struct {
		file string
		opts Options
		want Summary
	}{
		{
			file: "workflow_run/completed.payload.json",
			want: Summary{
				Action: "completed", Repo: "octo-org/octo-repo", Ref: "master", Workflow: "test", WorkflowPath: ".github/workflows/test.yml",
				Status: "completed", Conclusion: "success",
				URL:      "https://github.com/octo-org/octo-repo/actions/runs/289782451",
				Branches: []string{"master"}, Actor: "Codertocat",
				Key: "suite:1291536064", SuiteID: 1291536064,
				Run: &RunInfo{ID: 289782451, Attempt: 1, Number: 163, WorkflowID: 2823525, At: time.Date(2020, 10, 5, 16, 33, 49, 0, time.UTC)},
				Note: &Notification{
					Kind: "workflow_run", Outcome: Success, Title: "test", Repo: "octo-org/octo-repo",
					Branch: "master", Actor: "Codertocat", SHA: wrSHA,
					URL:    "https://github.com/octo-org/octo-repo/actions/runs/289782451",
					Number: 163, Detail: "build(test): check workflow run event payload",
					Live: "suite:octo-org/octo-repo:1291536064",
				},
			},
		},
		{
			// A requested run already "completed" (awaiting approval) is no
			// result: it is queued, an interim state, and claims no key.
			file: "workflow_run/requested.with-conclusion.payload.json",
			want: Summary{
				Action: "requested", Repo: "octo-org/octo-repo", Ref: "master", Workflow: "test", WorkflowPath: ".github/workflows/test.yml",
				Status: "completed", Conclusion: "action_required",
				URL:      "https://github.com/octo-org/octo-repo/actions/runs/289782451",
				Branches: []string{"master"}, Actor: "Codertocat", SuiteID: 1291536064,
				Run: &RunInfo{ID: 289782451, Attempt: 1, Number: 163, WorkflowID: 2823525, At: time.Date(2020, 10, 5, 16, 33, 24, 0, time.UTC)},
				Note: &Notification{
					Kind: "workflow_run", Outcome: Queued, Interim: true, Title: "test", Repo: "octo-org/octo-repo",
					Branch: "master", Actor: "Codertocat", SHA: wrSHA,
					URL:    "https://github.com/octo-org/octo-repo/actions/runs/289782451",
					Number: 163, Detail: "build(test): check workflow run event payload",
					Live: "suite:octo-org/octo-repo:1291536064",
				},
			},
		},
		{
			file: "check_suite/completed.payload.json",
			want: Summary{
				Action: "completed", Repo: "Codertocat/Hello-World", Ref: "changes",
				Workflow: "octocoders-linter", Status: "completed", Conclusion: "success",
				URL:      "https://github.com/Codertocat/Hello-World/commit/" + csSHA + "/checks",
				Branches: []string{"changes"}, Actor: "Codertocat", App: "octocoders-linter",
				Key: "suite:118578147", SuiteID: 118578147,
				Note: &Notification{
					Kind: "check_suite", Outcome: Success, Title: "octocoders-linter",
					Repo: "Codertocat/Hello-World", Branch: "changes", Actor: "Codertocat", SHA: csSHA,
					URL:    "https://github.com/Codertocat/Hello-World/commit/" + csSHA + "/checks",
					Live:   "suite:codertocat/hello-world:118578147",
					Parent: "pr:codertocat/hello-world#2",
				},
			},
		},
		{
			file: "check_suite/requested.payload.json",
			want: Summary{
				Action: "requested", Repo: "Codertocat/Hello-World", Ref: "master",
				Workflow: "octocoders-linter", Status: "queued",
				URL:      "https://github.com/Codertocat/Hello-World/commit/f95f852bd8fca8fcc58a9a2d6c842781e32a215e/checks",
				Branches: []string{"master"}, Actor: "Codertocat", App: "octocoders-linter", SuiteID: 118578174,
			},
		},
		{
			file: "check_run/completed.1.payload.json",
			want: Summary{
				Action: "completed", Repo: "Codertocat/Hello-World", Ref: "changes",
				Workflow: "Octocoders-linter", Status: "completed", Conclusion: "failure",
				URL:      "https://github.com/Codertocat/Hello-World/runs/128620228",
				Branches: []string{"changes"}, Actor: "Codertocat", App: "octocoders-linter",
				Key: "checkfail:118578147", Subject: "check_suite:118578147", SuiteID: 118578147,
				Note: &Notification{
					Kind: "check_run", Outcome: Failure, Title: "Octocoders-linter",
					Repo: "Codertocat/Hello-World", Branch: "changes", Actor: "Codertocat", SHA: csSHA,
					URL:  "https://github.com/Codertocat/Hello-World/runs/128620228",
					Live: "suite:codertocat/hello-world:118578147",
				},
			},
		},
		{
			// A successful check run waits for its suite, but is grouped under it.
			file: "check_run/completed.payload.json",
			want: Summary{
				Action: "completed", Repo: "Codertocat/Hello-World", Ref: "changes",
				Workflow: "Octocoders-linter", Status: "completed", Conclusion: "success",
				URL:      "https://github.com/Codertocat/Hello-World/runs/128620228",
				Branches: []string{"changes"}, Actor: "Codertocat", App: "octocoders-linter",
				Subject: "check_suite:118578147", SuiteID: 118578147,
			},
		},
		{
			file: "check_run/requested_action.payload.json",
			want: Summary{
				Action: "requested_action", Repo: "electron/electron", Ref: "miniak/event-process-id",
				Workflow: "API Review", Status: "in_progress",
				URL:      "https://github.com/electron/electron/runs/1494503112",
				Branches: []string{"miniak/event-process-id"}, Actor: "codebytere", App: "Electron Cation",
				Subject: "check_suite:1604239627", SuiteID: 1604239627,
			},
		},
		{
			file: "pull_request/opened.payload.json",
			want: Summary{
				Action: "opened", Repo: "Codertocat/Hello-World", Ref: "master", Status: "open",
				URL: prURL, Branches: []string{"master"}, Actor: "Codertocat", Subject: "pr:codertocat/hello-world#2",
				Note: &Notification{
					Kind: "pull_request", Outcome: Opened, Title: title, Repo: "Codertocat/Hello-World",
					Actor: "Codertocat", SHA: csSHA, URL: prURL, Number: 2, Author: "Codertocat", Base: "master", Head: "changes",
					Parent: "pr:codertocat/hello-world#2",
				},
			},
		},
		{
			file: "pull_request/closed.payload.json",
			want: Summary{
				Action: "closed", Repo: "Codertocat/Hello-World", Ref: "master", Status: "closed",
				URL: prURL, Branches: []string{"master"}, Actor: "Codertocat", Subject: "pr:codertocat/hello-world#2",
				Note: &Notification{
					Kind: "pull_request", Outcome: Closed, Title: title, Repo: "Codertocat/Hello-World",
					Actor: "Codertocat", SHA: csSHA, URL: prURL, Number: 2, Author: "Codertocat", Base: "master", Head: "changes",
					Parent: "pr:codertocat/hello-world#2",
				},
			},
		},
		{
			file: "pull_request/labeled.payload.json",
			want: Summary{
				Action: "labeled", Repo: "Codertocat/Hello-World", Ref: "master", Status: "open",
				URL: prURL, Branches: []string{"master"}, Actor: "Codertocat", Subject: "pr:codertocat/hello-world#2",
			},
		},
		{
			file: "status/payload.json",
			want: Summary{
				Repo: "Codertocat/Hello-World", Ref: "master", Workflow: "default",
				Status: "success", Conclusion: "success",
				URL:      "https://github.com/Codertocat/Hello-World/commit/" + stSHA,
				Branches: []string{"master", "changes", "gh-pages"}, Actor: "Codertocat",
				Key: "status:codertocat/hello-world:" + stSHA + ":default:success",
				Note: &Notification{
					Kind: "status", Outcome: Success, Title: "default", Repo: "Codertocat/Hello-World",
					Branch: "master", Actor: "Codertocat", SHA: stSHA,
					URL:  "https://github.com/Codertocat/Hello-World/commit/" + stSHA,
					Live: "status:codertocat/hello-world:" + stSHA + ":default",
				},
			},
		},
		{
			file: "ping/with-organization.payload.json",
			want: Summary{Actor: "Codertocat"},
		},
		{
			file: "push/payload.json",
			want: Summary{Repo: "Codertocat/Hello-World", Actor: "Codertocat"},
		},
		{
			file: "workflow_job/completed.failure.with-organization.payload.json",
			// Recorded under its run, never posted alone; the job row keeps
			// the first failed step and the duration for the run's message.
			want: Summary{
				Action: "completed", Repo: "Codertocat/Hello-World", Ref: "main", Workflow: "linters",
				Status: "completed", Conclusion: "failure", URL: "https://github.com/octo-org/octo-repo/runs/1291536064",
				Branches: []string{"main"}, Actor: "Codertocat", Subject: "run:2202229078",
				Kept: &Notification{
					Kind: "workflow_job", Outcome: Failure, Title: "linters", Repo: "Codertocat/Hello-World",
					Branch: "main", Actor: "Codertocat", URL: "https://github.com/octo-org/octo-repo/runs/1291536064",
					Number: 1, Detail: "Run yarn run format-check", Duration: 3*time.Minute + 18*time.Second,
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			got, err := Summarize(eventOf(tt.file), readPayload(t, tt.file), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			assertSummary(t, got, tt.want)
		})
	}
}

func assertSummary(t *testing.T, got, want Summary) {
	t.Helper()
	gotNote, wantNote := got.Note, want.Note
	got.Note, want.Note = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Summary:\n got %+v\nwant %+v", got, want)
	}
	if !reflect.DeepEqual(gotNote, wantNote) {
		t.Errorf("Note:\n got %+v\nwant %+v", deref(gotNote), deref(wantNote))
	}
}

func deref(n *Notification) any {
	if n == nil {
		return nil
	}
	return *n
}

// variant returns a real payload with some fields replaced; a nil value
// deletes the field (json.RawMessage("null") sets it to null). Paths are dot-separated object keys.
func variant(t testing.TB, file string, set map[string]any) []byte {
	t.Helper()
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(readPayload(t, file)))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	for p, v := range set {
		keys := strings.Split(p, ".")
		obj := doc
		for _, k := range keys[:len(keys)-1] {
			next, ok := obj[k].(map[string]any)
			if !ok {
				t.Fatalf("%s: %s is not an object", file, p)
			}
			obj = next
		}
		last := keys[len(keys)-1]
		if v == nil {
			delete(obj, last)
		} else {
			obj[last] = v
		}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzSummarize(f *testing.F) {
	for _, file := range payloadFiles(f) {
		f.Add(eventOf(file), readPayload(f, file))
	}
	for _, seed := range []struct{ event, body string }{
		{"workflow_run", `{"workflow_run":"x"}`},
		{"pull_request", `{"pull_request":[]}`},
		{"check_run", `{"action":"completed","check_run":{"conclusion":"failure","started_at":1,"completed_at":"2020-01-01T00:00:00Z"}}`},
		{"status", `{"state":"pending","branches":[{"name":" a "}]}`},
		{"check_suite", `{"action":"completed","check_suite":{"app":null}}`},
		{"push", `null`},
	} {
		f.Add(seed.event, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		for _, opts := range []Options{{}, {NotifyPending: true}} {
			s, err := Summarize(event, body, opts)
			if err != nil {
				if !strings.Contains(err.Error(), "malformed "+event+" payload") {
					t.Fatalf("error does not name the event: %v", err)
				}
				continue
			}
			if s.Note != nil && s.Note.Kind != event {
				t.Fatalf("Note.Kind = %q for event %q", s.Note.Kind, event)
			}
			if s.Key != "" && s.Note == nil {
				t.Fatalf("Key %q without a Note", s.Key)
			}
			if s.Note != nil && s.Note.Duration < 0 {
				t.Fatalf("negative duration %v", s.Note.Duration)
			}
			if s.Note != nil {
				if _, err := json.Marshal(s.Note); err != nil {
					t.Fatalf("marshal Note: %v", err)
				}
			}
		}
	})
}
