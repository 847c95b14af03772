package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/ledger/postgres/pgtest"
	"github.com/ciwebhook/ciwebhook/internal/slack/slacktest"
)

// Three replicas on one PostgreSQL ledger and one Slack: a few hundred
// deliveries spread across them, each also sent to another replica at the
// same moment, and the delivering replica killed half-way. Every delivery
// a replica acknowledged reaches Slack exactly once, and the deployment as
// a whole keeps to SLACK_RATE.
func TestReplicasShareOneLedger(t *testing.T) {
	dsn := pgtest.Schema(t, "replicas")
	fake := slacktest.New(t)
	const rate = 40
	env := []string{"LEDGER_BACKEND=postgres", "DATABASE_URL=" + dsn, "SLACK_WEBHOOK_URL=" + fake.URL(),
		fmt.Sprint("SLACK_RATE=", rate), "SLACK_RETRY_BASE=100ms", "LEDGER_LIMIT=100000"}
	replicas := []*server{start(t, env...), start(t, env...), start(t, env...)}

	// Wait until one replica says it delivers.
	leader := -1
	for deadline := time.Now().Add(20 * time.Second); leader < 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for i, r := range replicas {
			if strings.Contains(r.log(), "this replica delivers to Slack") {
				leader = i
			}
		}
	}
	if leader < 0 {
		t.Fatal("no replica took the delivery lock")
	}

	body := func(i int) []byte {
		b, err := os.ReadFile(filepath.Join(payloads, "pull_request/opened.payload.json"))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		json.Unmarshal(b, &m)
		m["pull_request"].(map[string]any)["title"] = fmt.Sprintf("change-%03d", i)
		out, _ := json.Marshal(m)
		return out
	}

	const n = 240
	var (
		mu    sync.Mutex
		acked = map[int]bool{}
		dead  sync.Map // replicas killed
	)
	sendTo := func(r, i int) {
		if _, ok := dead.Load(r); ok {
			return
		}
		code, _, err := replicas[r].try(fmt.Sprint("delivery-", i), "pull_request", body(i))
		if err == nil && code/100 == 2 {
			mu.Lock()
			acked[i] = true
			mu.Unlock()
		} else if err == nil {
			t.Errorf("delivery %d on replica %d: %d", i, r, code)
		}
	}
	work := make(chan int)
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for i := range work {
				var pair sync.WaitGroup
				pair.Go(func() { sendTo(i%3, i) })
				pair.Go(func() { sendTo((i+1)%3, i) }) // the same delivery, elsewhere, at once
				pair.Wait()
			}
		})
	}
	for i := range n {
		if i == n/2 {
			dead.Store(leader, true)
			replicas[leader].cmd.Process.Signal(syscall.SIGKILL)
		}
		work <- i
	}
	close(work)
	wg.Wait()
	if len(acked) < n*9/10 {
		t.Fatalf("only %d of %d deliveries acknowledged", len(acked), n)
	}

	// The killed leader's claimed row waits out its lease (30 s).
	title := regexp.MustCompile(`change-(\d{3})`)
	count := func() map[int]int {
		seen := map[int]int{}
		for _, p := range fake.Accepted() {
			if m := title.FindStringSubmatch(p.Text); m != nil {
				i, _ := strconv.Atoi(m[1]) // not Sscan: it reads "010" as octal
				seen[i]++
			}
		}
		return seen
	}
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		seen := count()
		missing := 0
		for i := range acked {
			if seen[i] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // room for a double post to show
	seen := count()
	for i := range n {
		switch {
		case acked[i] && seen[i] != 1:
			t.Errorf("acknowledged delivery %d reached Slack %d times, want exactly once", i, seen[i])
		case seen[i] > 1:
			t.Errorf("delivery %d reached Slack %d times", i, seen[i])
		}
	}

	took := 0
	for _, r := range replicas {
		if strings.Contains(r.log(), "this replica delivers to Slack") {
			took++
		}
	}
	if took < 2 {
		t.Errorf("no other replica took over delivery after the leader was killed")
	}

	// One replica posts at a time: no second of posts beyond the rate and
	// its burst of 5 (and one of slack for timing jitter).
	posts := fake.Posts()
	for i := range posts {
		j := i
		for j < len(posts) && posts[j].At.Sub(posts[i].At) < time.Second {
			j++
		}
		if j-i > rate+6 {
			t.Fatalf("%d posts within one second from %v; SLACK_RATE=%d holds for the deployment", j-i, posts[i].At, rate)
		}
	}
	t.Logf("%d deliveries, %d acknowledged, %d posts; replica %d (the leader) killed half-way", n, len(acked), len(posts), leader)
}

// try posts a signed delivery and reports a transport error instead of
// failing: a killed replica refuses connections.
func (s *server) try(guid, event string, body []byte) (int, map[string]any, error) {
	req, _ := http.NewRequest(http.MethodPost, s.url+"/webhooks/github", bytes.NewReader(body))
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", guid)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m, nil
}
