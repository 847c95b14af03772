package replay

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ciwebhook/ciwebhook/internal/event"
	"github.com/ciwebhook/ciwebhook/internal/githook"
	"github.com/ciwebhook/ciwebhook/internal/ledger/sqlite"
	"github.com/ciwebhook/ciwebhook/internal/metrics"
	"github.com/ciwebhook/ciwebhook/internal/notify"
	"github.com/ciwebhook/ciwebhook/internal/slack"
)

const (
	secret   = "replay-secret"
	payloads = "../../../shared/github-payloads"
)

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// delivery is one webhook delivery of the stream.
type delivery struct {
	event, guid string
	body        []byte
}

// stream builds the deliveries and, alongside, the messages a careful
// engineer wants in NOTIFY_MODE=changes, written by hand in the scripts
// below (the markers), not computed by the code under test.
type stream struct {
	t          *testing.T
	base       map[string]map[string]any
	deliveries []delivery
	want       []string
	seq        int
	clock      time.Time
}

func (s *stream) payload(file string) map[string]any {
	s.t.Helper()
	if s.base == nil {
		s.base = map[string]map[string]any{}
	}
	if _, ok := s.base[file]; !ok {
		b, err := os.ReadFile(filepath.Join(payloads, file))
		if err != nil {
			s.t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			s.t.Fatal(err)
		}
		s.base[file] = m
	}
	// A deep copy, through JSON, so that rewriting never leaks between deliveries.
	b, _ := json.Marshal(s.base[file])
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

// set rewrites a dotted path of a payload in memory.
func set(m map[string]any, path string, v any) {
	keys := strings.Split(path, ".")
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = v
}

func (s *stream) add(ev string, m map[string]any) string {
	s.seq++
	guid := fmt.Sprintf("replay-%04d", s.seq)
	b, err := json.Marshal(m)
	if err != nil {
		s.t.Fatal(err)
	}
	s.deliveries = append(s.deliveries, delivery{ev, guid, b})
	return guid
}

// redeliver sends a delivery again, as GitHub's "Redeliver" button does.
func (s *stream) redeliver() {
	s.deliveries = append(s.deliveries, s.deliveries[len(s.deliveries)-1])
}

func (s *stream) tick() time.Time {
	s.clock = s.clock.Add(7 * time.Minute)
	return s.clock
}

// workflow is one workflow on one branch of one repository.
type workflow struct {
	repo, file, name, branch, actor string
	id                              int64 // run ids are id*1000 + run number
	pr                              int   // runs are for this pull request, when set
}

// A workflow script is a list of tokens, one per completed run:
//
//	p pass, f fail, t timed out, c cancelled (the newest run), s skipped,
//	n neutral; r before a result: a re-run (next attempt) of the previous
//	run; C: this run is cancelled after a newer one started (superseded).
//
// The marker after a token is what the careful engineer wants posted:
// ! a "failed" message, +N a "fixed" message after N broken runs,
// = a "cancelled" message; nothing: stay quiet.
func (s *stream) workflowScript(w workflow, script string) {
	run, attempt := 0, 1
	started := false // the next run has started already
	for _, tok := range strings.Fields(script) {
		rerun := strings.HasPrefix(tok, "r")
		tok = strings.TrimPrefix(tok, "r")
		if rerun {
			attempt++
		} else {
			run, attempt = run+1, 1
			if !started {
				s.runDelivery(w, run, 1, "requested", "")
			}
			started = false
		}
		result, marker := tok[:1], tok[1:]
		superseded := result == "C"
		if superseded {
			// The newer run starts first; this one is cancelled for it.
			s.runDelivery(w, run+1, 1, "requested", "")
			started = true
		}
		conclusion := map[string]string{"p": "success", "f": "failure", "t": "timed_out", "c": "cancelled",
			"C": "cancelled", "s": "skipped", "n": "neutral"}[result]
		failedJobs := 0
		if conclusion == "failure" || conclusion == "timed_out" {
			failedJobs = 1 + run%2
		}
		for j, job := range []string{"build", "test (ubuntu-latest)", "lint"} {
			jc := "success"
			if j >= 3-failedJobs {
				jc = conclusion
			}
			if conclusion == "cancelled" || conclusion == "skipped" || conclusion == "neutral" {
				jc = conclusion
			}
			s.jobDelivery(w, run, attempt, job, jc)
		}
		s.runDelivery(w, run, attempt, "completed", conclusion)
		if run%3 == 0 {
			s.redeliver() // a duplicate GUID: answered "duplicate", never said twice
		}
		s.suiteDelivery(w, run, attempt, conclusion)
		s.expect(w, run, conclusion, marker)
	}
}

func (s *stream) expect(w workflow, run int, conclusion, marker string) {
	if marker == "" {
		return
	}
	var what string
	switch marker[0] {
	case '!':
		what = "failed"
		if conclusion == "timed_out" {
			what = "timed out"
		}
	case '+':
		what = "fixed after " + marker[1:] + " runs"
	case '=':
		what = "cancelled"
	default:
		s.t.Fatalf("bad marker %q", marker)
	}
	s.want = append(s.want, fmt.Sprintf("workflow_run %s %s %s #%d %s", w.repo, w.name, w.branch, run, what))
}

func (s *stream) runDelivery(w workflow, run, attempt int, action, conclusion string) {
	m := s.payload("workflow_run/completed.with-pull-requests.payload.json")
	at := s.tick()
	set(m, "action", action)
	set(m, "repository.full_name", w.repo)
	set(m, "workflow_run.id", w.id*1000+int64(run))
	set(m, "workflow_run.run_number", run)
	set(m, "workflow_run.run_attempt", attempt)
	set(m, "workflow_run.name", w.name)
	set(m, "workflow_run.path", w.file)
	set(m, "workflow_run.head_branch", w.branch)
	set(m, "workflow_run.head_sha", fmt.Sprintf("%040x", w.id*1000+int64(run)))
	set(m, "workflow_run.check_suite_id", (w.id*1000+int64(run))*10+int64(attempt))
	set(m, "workflow_run.html_url", fmt.Sprintf("https://github.com/%s/actions/runs/%d", w.repo, w.id*1000+int64(run)))
	set(m, "workflow_run.actor.login", w.actor)
	set(m, "workflow_run.triggering_actor.login", w.actor)
	set(m, "workflow_run.run_started_at", at.Add(-5*time.Minute).Format(time.RFC3339))
	set(m, "workflow_run.updated_at", at.Format(time.RFC3339))
	prs := []any{}
	if w.pr != 0 {
		prs = append(prs, map[string]any{"number": w.pr})
	}
	set(m, "workflow_run.pull_requests", prs)
	if action == "completed" {
		set(m, "workflow_run.status", "completed")
		set(m, "workflow_run.conclusion", conclusion)
	} else {
		set(m, "workflow_run.status", "queued")
		set(m, "workflow_run.conclusion", nil)
	}
	s.add("workflow_run", m)
}

func (s *stream) jobDelivery(w workflow, run, attempt int, name, conclusion string) {
	file := "workflow_job/completed.success.with-organization.payload.json"
	if conclusion == "failure" || conclusion == "timed_out" {
		file = "workflow_job/completed.failure.with-organization.payload.json"
	}
	m := s.payload(file)
	set(m, "repository.full_name", w.repo)
	set(m, "workflow_job.run_id", w.id*1000+int64(run))
	set(m, "workflow_job.run_attempt", attempt)
	set(m, "workflow_job.name", name)
	set(m, "workflow_job.head_branch", w.branch)
	set(m, "workflow_job.conclusion", conclusion)
	set(m, "workflow_job.html_url", fmt.Sprintf("https://github.com/%s/actions/runs/%d/job/%d", w.repo, w.id*1000+int64(run), len(name)))
	s.add("workflow_job", m)
}

// suiteDelivery is the GitHub Actions check suite of the run: said once
// with the run in mode all, judged by the run in mode changes.
func (s *stream) suiteDelivery(w workflow, run, attempt int, conclusion string) {
	m := s.payload("check_suite/completed.payload.json")
	set(m, "repository.full_name", w.repo)
	set(m, "check_suite.id", (w.id*1000+int64(run))*10+int64(attempt))
	set(m, "check_suite.head_branch", w.branch)
	set(m, "check_suite.conclusion", conclusion)
	set(m, "check_suite.app.name", "GitHub Actions")
	s.add("check_suite", m)
}

// A status script is like a workflow script, one token per commit: p
// success, f failure, e error; r before a result sets the status again on
// the previous commit (a re-run of the same CI job); d sends the previous
// status again, as GitHub sometimes does (said once in any mode).
func (s *stream) statusScript(repo, context, branch string, script string) {
	commit := 0
	for _, tok := range strings.Fields(script) {
		if tok == "d" {
			s.redeliverAsNew()
			continue
		}
		if strings.HasPrefix(tok, "r") {
			tok = tok[1:]
		} else {
			commit++
		}
		result, marker := tok[:1], tok[1:]
		state := map[string]string{"p": "success", "f": "failure", "e": "error"}[result]
		m := s.payload("status/payload.json")
		set(m, "repository.full_name", repo)
		set(m, "context", context)
		set(m, "state", state)
		// Each branch has commits of its own: the same commit on two branches
		// is one status, said once.
		sha := fmt.Sprintf("%040x", len(context)*100000+len(branch)*1000+commit)
		set(m, "sha", sha)
		set(m, "branches", []any{map[string]any{"name": branch}})
		s.add("status", m)
		if marker == "" {
			continue
		}
		what := map[byte]string{'!': "failed", '+': "fixed after " + marker[1:] + " runs"}[marker[0]]
		s.want = append(s.want, fmt.Sprintf("status %s %s %s %s", repo, context, branch, what))
	}
}

// redeliverAsNew sends the last delivery's body under a new GUID: GitHub
// re-sending the same status.
func (s *stream) redeliverAsNew() {
	last := s.deliveries[len(s.deliveries)-1]
	s.seq++
	s.deliveries = append(s.deliveries, delivery{last.event, fmt.Sprintf("replay-%04d", s.seq), last.body})
}

func (s *stream) pullRequest(repo string, number int, action, author string, merged bool) {
	m := s.payload("pull_request/opened.payload.json")
	set(m, "action", action)
	set(m, "number", number)
	set(m, "repository.full_name", repo)
	set(m, "pull_request.number", number)
	set(m, "pull_request.title", fmt.Sprintf("Change %d", number))
	set(m, "pull_request.user.login", author)
	set(m, "pull_request.html_url", fmt.Sprintf("https://github.com/%s/pull/%d", repo, number))
	if action == "closed" {
		set(m, "pull_request.state", "closed")
		set(m, "pull_request.merged", merged)
		set(m, "pull_request.merged_by", map[string]any{"login": author})
	}
	s.add("pull_request", m)
	outcome := map[string]string{"opened": "opened", "synchronize": "synchronize", "closed": "closed"}[action]
	if merged {
		outcome = "merged"
	}
	s.want = append(s.want, fmt.Sprintf("pull_request %s #%d %s", repo, number, outcome))
}

// build is the whole labelled stream.
func build(t *testing.T) *stream {
	s := &stream{t: t, clock: t0}
	scripts := []string{
		// Passing, breaking, staying broken (a re-run included), fixed.
		"p p f! f rf f p+3 p p",
		// Broken and fixed by a re-run; superseded and skipped runs are
		// quiet; a timed-out run stays in the same breakage; fixed by a
		// re-run after two broken runs.
		"f! rf rp+1 p C p s n f! t rp+2 p",
		// A cancelled newest run is said; the first success is no news;
		// a superseded run in a breakage is quiet.
		"c= p f! C f p+2 p",
		// Long green stretch, one failure fixed at once.
		"p p p p p f! p+1 p p",
	}
	n := 0
	for _, repo := range []string{"octo-org/api", "octo-org/web"} {
		for _, wf := range []struct{ file, name string }{{".github/workflows/ci.yml", "CI"}, {".github/workflows/e2e.yml", "E2E, nightly 🚀"}} {
			for _, branch := range []string{"main", "release/1.x"} {
				n++
				w := workflow{repo: repo, file: wf.file, name: wf.name, branch: branch, actor: "octocat", id: int64(n)}
				s.workflowScript(w, scripts[n%len(scripts)])
			}
		}
	}
	// A pull request's runs: its author is mentioned on the failure.
	s.pullRequest("octo-org/api", 42, "opened", "alice", false)
	s.workflowScript(workflow{repo: "octo-org/api", file: ".github/workflows/ci.yml", name: "CI", branch: "feature/pg",
		actor: "alice", id: 99, pr: 42}, "f! f p+2")
	s.pullRequest("octo-org/api", 42, "synchronize", "alice", false)
	s.pullRequest("octo-org/api", 42, "closed", "alice", true)

	for _, branch := range []string{"main", "release/1.x"} {
		s.statusScript("octo-org/api", "ci/jenkins", branch, "p p d f! d f e p+3 p f! rp+1 p")
		s.statusScript("octo-org/web", "security/snyk", branch, "f! f p+2 p p")
	}
	return s
}

type result struct {
	posted     []string
	rendered   []slack.Message
	answers    map[string]int
	deliveries int
	suppressed float64
}

func replay(t *testing.T, s *stream, mode string) result {
	t.Helper()
	store, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "ledger.db"), 100_000)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	clock := t0
	h := githook.New(githook.Options{
		Secrets: [][]byte{[]byte(secret)}, MaxBodyBytes: 1 << 20,
		Filters: notify.Filters{Mode: mode, Mentions: map[string]string{"octocat": "U0OCTO", "alice": "U0ALICE"}},
		Backend: "sqlite", SlackMode: "log-only",
		Now: func() time.Time { clock = clock.Add(time.Second); return clock },
	}, store, m, slog.New(slog.DiscardHandler))

	r := result{answers: map[string]int{}}
	for _, d := range s.deliveries {
		r.answers[post(t, h, d)]++
		r.deliveries++
	}
	rows, err := store.Due(context.Background(), "", time.Now().Add(time.Hour), 0, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rows {
		var n event.Notification
		if err := json.Unmarshal(row.Message, &n); err != nil {
			t.Fatal(err)
		}
		r.posted = append(r.posted, label(n))
		r.rendered = append(r.rendered, slack.Render(n))
	}
	r.suppressed = counter(t, reg, "ciwebhook_suppressed_total")
	return r
}

// post sends one delivery as GitHub would and returns the answer's status.
func post(t *testing.T, h http.Handler, d delivery) string {
	t.Helper()
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(d.body)
	req := httptest.NewRequest(http.MethodPost, githook.Path, bytes.NewReader(d.body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", d.event)
	req.Header.Set("X-GitHub-Delivery", d.guid)
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var a struct{ Status string }
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil || rec.Code >= 300 && rec.Code != http.StatusOK {
		t.Fatalf("%s %s: %d %s", d.event, d.guid, rec.Code, rec.Body)
	}
	return a.Status
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// label is a message as the scripts write it.
func label(n event.Notification) string {
	switch n.Kind {
	case "pull_request":
		return fmt.Sprintf("pull_request %s #%d %s", n.Repo, n.Number, n.Outcome)
	case "status":
		return fmt.Sprintf("status %s %s %s %s", n.Repo, n.Title, n.Branch, what(n))
	}
	return fmt.Sprintf("%s %s %s %s #%d %s", n.Kind, n.Repo, n.Title, n.Branch, n.Number, what(n))
}

func what(n event.Notification) string {
	switch {
	case n.Change == "fixed":
		return "fixed after " + strconv.Itoa(n.BrokenRuns) + " runs"
	case n.Outcome == event.TimedOut:
		return "timed out"
	case n.Outcome == event.Failure:
		return "failed"
	}
	return string(n.Outcome)
}

func TestReplay(t *testing.T) {
	s := build(t)
	if len(s.deliveries) < 500 {
		t.Fatalf("the stream has %d deliveries, want at least 500", len(s.deliveries))
	}

	changes := replay(t, s, notify.ModeChanges)
	if !slices.Equal(changes.posted, s.want) {
		t.Errorf("NOTIFY_MODE=changes posted %d messages, want %d", len(changes.posted), len(s.want))
		for _, l := range diff(changes.posted, s.want) {
			t.Error(l)
		}
	}
	all := replay(t, s, notify.ModeAll)
	t.Logf("%d deliveries: NOTIFY_MODE=all posts %d messages, NOTIFY_MODE=changes posts %d (%d kept quiet as no change)",
		len(s.deliveries), len(all.posted), len(changes.posted), int(changes.suppressed))
	t.Logf("answers in mode all: %v; in mode changes: %v", all.answers, changes.answers)

	// Mode all says every result: each a superset of what changes says.
	if len(all.posted) <= len(changes.posted) || all.suppressed != 0 || changes.suppressed == 0 {
		t.Errorf("all %d (suppressed %v), changes %d (suppressed %v)", len(all.posted), all.suppressed, len(changes.posted), changes.suppressed)
	}
	if changes.answers["duplicate"] == 0 || changes.answers["duplicate"] != all.answers["duplicate"] {
		t.Errorf("redeliveries answered duplicate: %v vs %v", changes.answers, all.answers)
	}

	// What the messages say: failed jobs on failures, mentions of the
	// actor and the PR's author, how long a fix took.
	for i, m := range changes.rendered {
		text := m.Blocks[0].Text.Text
		switch l := changes.posted[i]; {
		case strings.HasPrefix(l, "workflow_run") && (strings.HasSuffix(l, " failed") || strings.HasSuffix(l, "timed out")):
			if len(m.Blocks) < 3 || !strings.Contains(m.Blocks[1].Text.Text, "*Failed jobs*") || !strings.Contains(m.Blocks[1].Text.Text, "lint") {
				t.Errorf("%s: no failed jobs listed: %+v", l, m.Blocks)
			}
			if strings.Contains(m.Blocks[1].Text.Text, "build") {
				t.Errorf("%s: a passing job is listed as failed: %s", l, m.Blocks[1].Text.Text)
			}
			wantCC := "cc <@U0OCTO>"
			if strings.Contains(l, "feature/pg") {
				wantCC = "cc <@U0ALICE>" // the actor and the PR author are the same person: once
			}
			if !strings.Contains(text, wantCC) {
				t.Errorf("%s: mentions: %q, want %q", l, text, wantCC)
			}
		case strings.Contains(l, "fixed"):
			if !strings.Contains(text, "fixed") || !strings.Contains(text, "Broken for") || strings.Contains(text, "<@") {
				t.Errorf("%s: %q", l, text)
			}
		}
	}
}

// diff lists the messages one list has and the other lacks, in order.
func diff(got, want []string) []string {
	var out []string
	count := func(l []string) map[string]int {
		m := map[string]int{}
		for _, s := range l {
			m[s]++
		}
		return m
	}
	g, w := count(got), count(want)
	for _, s := range want {
		if g[s] < w[s] {
			out = append(out, "missing: "+s)
			g[s]++
		}
	}
	g, w = count(got), count(want)
	for _, s := range got {
		if w[s] < g[s] {
			out = append(out, "unwanted: "+s)
			w[s]++
		}
	}
	if len(out) == 0 {
		out = append(out, "the same messages in another order")
	}
	return out
}
