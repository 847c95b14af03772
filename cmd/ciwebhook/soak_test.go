//go:build soak

package main

// The long fault tests, off by default:
//
//	go test -tags soak -run Soak ./cmd/ciwebhook -soak.duration=10m -timeout=30m
//
// TestSoakCrash kills the server twenty times under load (with Slack up,
// and with Slack down until the end); TestSoak runs steady load with
// periodic Slack outages for -soak.duration and checks that memory,
// goroutines and open files stay flat.

import (
	"bufio"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/slack/slacktest"
)

var soakDuration = flag.Duration("soak.duration", 10*time.Minute, "how long TestSoak runs")

func TestSoakCrash(t *testing.T) {
	for _, tc := range []struct {
		name      string
		backend   string
		slackDown bool
	}{
		{"sqlite/slack-up", "sqlite", false},
		{"sqlite/slack-down", "sqlite", true},
		{"file/slack-up", "file", false},
		{"file/slack-down", "file", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			crashUnderLoad(t, crashOpts{backend: tc.backend, kills: 20, slackDown: tc.slackDown,
				minUp: 200 * time.Millisecond, maxUp: 2 * time.Second, senders: 4})
		})
	}
}

type sample struct {
	at                         time.Duration
	rssKB, fds, goroutines, th int
}

// goroutines reads go_goroutines from the server's Prometheus metrics.
func goroutines(t *testing.T, base string) int {
	t.Helper()
	resp, err := faultClient.Get(base + "/webhooks/github/metrics?format=prometheus")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no go_goroutines in the metrics")
	return 0
}

func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// Steady load plus periodic Slack outages for -soak.duration: every
// delivery acknowledged reaches Slack exactly once, and the server's
// memory (RSS), goroutines and open files stay flat: the average of the
// last window is at most 1.5 times the first's (plus a little, for small
// counts), a window being a minute, or a quarter of a shorter run.
func TestSoak(t *testing.T) {
	d := *soakDuration
	fake := slacktest.New(t)
	var down atomic.Bool
	fake.Script(func(int) slacktest.Reply {
		if down.Load() {
			return slacktest.Reply{Status: 503, Body: "down"}
		}
		return slacktest.Reply{Status: 200, Body: "ok"}
	})
	s := start(t, "LEDGER_PATH="+filepath.Join(t.TempDir(), "l.db"), "SLACK_WEBHOOK_URL="+fake.URL(),
		"SLACK_RETRY_BASE=200ms", "SLACK_MAX_ATTEMPTS=100", "SLACK_RATE=100", "LOG_LEVEL=info")
	pid := s.cmd.Process.Pid

	// Steady load: 2 senders, 25 deliveries a second each.
	l := newLoad(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			tick := time.NewTicker(40 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				l.mu.Lock()
				i := l.next
				l.next++
				l.mu.Unlock()
				code, err := post(s.url, faultGUID(i), faultBody(t, i))
				l.mu.Lock()
				switch {
				case err != nil:
					l.res[i] = noAnswer
				case code == http.StatusAccepted:
					l.res[i] = acked
				default:
					l.res[i], l.code[i] = refused, code
				}
				l.mu.Unlock()
			}
		})
	}
	// Slack outages: down for a quarter of every tenth of the run (15 s a minute for 10 minutes).
	period := d / 10
	wg.Go(func() {
		for {
			select {
			case <-stop:
				down.Store(false)
				return
			case <-time.After(period * 3 / 4):
			}
			down.Store(true)
			select {
			case <-stop:
				down.Store(false)
				return
			case <-time.After(period / 4):
			}
			down.Store(false)
		}
	})

	var samples []sample
	t0 := time.Now()
	for time.Since(t0) < d {
		time.Sleep(2 * time.Second)
		samples = append(samples, sample{at: time.Since(t0), rssKB: procStatus(t, pid, "VmRSS"),
			fds: openFDs(t, pid), goroutines: goroutines(t, s.url), th: procStatus(t, pid, "Threads")})
	}
	close(stop)
	wg.Wait()

	window := min(time.Minute, d/4)
	avg := func(from, to time.Duration, f func(sample) int) float64 {
		sum, n := 0, 0
		for _, x := range samples {
			if x.at >= from && x.at < to {
				sum += f(x)
				n++
			}
		}
		if n == 0 {
			t.Fatalf("no samples between %v and %v", from, to)
		}
		return float64(sum) / float64(n)
	}
	elapsed := samples[len(samples)-1].at + time.Millisecond
	for _, m := range []struct {
		name  string
		f     func(sample) int
		slack float64 // absolute allowance for small counts
	}{
		{"RSS (kB)", func(x sample) int { return x.rssKB }, 2048},
		{"open files", func(x sample) int { return x.fds }, 8},
		{"goroutines", func(x sample) int { return x.goroutines }, 10},
		{"threads", func(x sample) int { return x.th }, 4},
	} {
		first, last := avg(0, window, m.f), avg(elapsed-window, elapsed, m.f)
		t.Logf("%s: first %v %.0f, last %v %.0f (×%.2f)", m.name, window, first, window, last, last/first)
		if last > 1.5*first+m.slack {
			t.Errorf("%s grew from %.0f to %.0f over %v", m.name, first, last, d)
		}
	}

	// Everything acknowledged reaches Slack exactly once once it is up.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		seen := slackCounts(fake)
		missing := missingAcked(l, seen)
		h := s.health(t)
		if missing == 0 && h["pending"] == 0.0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d acknowledged deliveries never reached Slack; health %v", missing, h)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	seen := slackCounts(fake)
	for i, r := range l.res {
		if r == acked && len(seen[i]) != 1 {
			t.Errorf("delivery %d reached Slack %d times, want once", i, len(seen[i]))
		}
	}
	if h := s.health(t); h["failed"] != 0.0 {
		t.Errorf("health: %v", h)
	}
	retries := len(fake.Posts()) - len(fake.Accepted())
	t.Logf("%v: %d acknowledged, %d refused, %d without an answer; %d Slack posts refused during outages",
		d, l.count(acked), l.count(refused), l.count(noAnswer), retries)
	if l.count(refused)+l.count(noAnswer) > 0 {
		t.Errorf("deliveries not acknowledged under steady load: %d refused (%v), %d without an answer",
			l.count(refused), l.code, l.count(noAnswer))
	}
	if retries == 0 {
		t.Error("no Slack outage happened: the soak did not test retries")
	}
}
