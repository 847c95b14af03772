// Package slack turns notifications into Block Kit messages and posts them to
// Slack. Everything GitHub wrote is treated as hostile text: redacted,
// escaped and cut to Slack's limits before it reaches a message.
package slack

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/event"
)

// Message is the body of an incoming-webhook post.
type Message struct {
	// Text is the fallback that notifications and screen readers show; it
	// is always set.
	Text   string  `json:"text"`
	Blocks []Block `json:"blocks"`
}

// Block is a Block Kit layout block: a section (Text set) or a context
// (Elements set).
type Block struct {
	Type     string  `json:"type"`
	Text     *Text   `json:"text,omitempty"`
	Elements []*Text `json:"elements,omitempty"`
}

// Text is a Block Kit mrkdwn text object.
type Text struct {
	Type string `json:"type"`
	Text string `json:"text"`
	// Verbatim stops Slack from turning bare URLs, #channel names and
	// @-words from GitHub into links and mentions; our own <url|label>
	// links still work.
	Verbatim bool `json:"verbatim,omitempty"`
}

func mrkdwn(s string) *Text { return &Text{Type: "mrkdwn", Text: s, Verbatim: true} }

// look is how an outcome reads: an emoji to catch the eye and a verb for the
// headline.
type look struct{ emoji, verb string }

// looks keeps red and ❌ for what needs someone to act: cancelled, skipped
// and neutral runs are routine and must not read as failures.
var looks = map[event.Outcome]look{
	event.Success:        {"✅", "passed"},
	event.Failure:        {"❌", "failed"},
	event.TimedOut:       {"⏱️", "timed out"},
	event.Cancelled:      {"⚪", "cancelled"},
	event.Skipped:        {"⏭️", "skipped"},
	event.Neutral:        {"➖", "finished (neutral)"},
	event.ActionRequired: {"⚠️", "needs action"},
	event.Stale:          {"⚪", "went stale"},
	event.Pending:        {"🟡", "pending"},
	event.Queued:         {"⏳", "queued"},
	event.InProgress:     {"🔵", "running"},

	event.Opened:         {"🔀", "opened"},
	event.Reopened:       {"🔁", "reopened"},
	event.ReadyForReview: {"👀", "marked ready for review"},
	event.Synchronized:   {"🔄", "updated"},
	event.Merged:         {"✅", "merged"},
	// ⚪ as for cancelled: it ended without a verdict, nobody failed.
	event.Closed: {"⚪", "closed"},
}

func lookOf(o event.Outcome) look {
	if l, ok := looks[o]; ok {
		return l
	}
	verb := field(strings.ReplaceAll(string(o), "_", " "), 40)
	if verb == "" {
		verb = "finished"
	}
	return look{"ℹ️", verb}
}

// countOrder lists outcomes as a reader scans a suite: what passed, then what
// went wrong, then the rest.
var countOrder = []struct {
	outcome event.Outcome
	label   string
}{
	{event.Success, "passed"},
	{event.Failure, "failed"},
	{event.TimedOut, "timed out"},
	{event.ActionRequired, "action required"},
	{event.Cancelled, "cancelled"},
	{event.Neutral, "neutral"},
	{event.Skipped, "skipped"},
	{event.Stale, "stale"},
	{event.Pending, "pending"},
}

// Field widths in characters after escaping. They keep any one field from
// crowding out the others; together they stay far below Slack's limits.
type widths struct{ title, name, actor, detail, check int }

var (
	sectionWidths  = widths{title: 300, name: 120, actor: 80, detail: 300, check: 100}
	fallbackWidths = widths{title: 120, name: 60, actor: 40}
)

const maxFailedListed = 10

// Render builds the Slack message for a notification: the outcome and
// where in a bold section line, who and which commit in a context line, and
// one link.
func Render(n event.Notification) Message {
	l := lookOf(n.Outcome)
	if n.Change == "fixed" {
		l = look{"✅", "fixed"}
	}
	w := sectionWidths

	section := l.emoji + " *" + headline(n, l, w) + "*"
	if n.Kind == "check_suite" {
		if s := countsLine(n.Counts); s != "" {
			section += "\n" + s
		}
		if s := failedLine(n.Failed, w.check); s != "" {
			section += "\n" + s
		}
	}

	if s := fixedLine(n); s != "" {
		section += "\n" + s
	}
	// Mentions go in the section, where Slack notifies for them, and in the
	// fallback, which is what a phone shows.
	cc := mentions(n.Mentions)
	if cc != "" {
		section += "\n" + cc
	}

	blocks := []Block{{Type: "section", Text: mrkdwn(clip(section, maxSectionText))}}
	if jobs := jobsSection(n, w); jobs != "" {
		blocks = append(blocks, Block{Type: "section", Text: mrkdwn(clip(jobs, maxSectionText))})
	}
	if ctx := contextLine(n, w); ctx != "" {
		blocks = append(blocks, Block{Type: "context", Elements: []*Text{mrkdwn(clip(ctx, maxContextText))}})
	}
	text := fallback(n, l)
	if cc != "" {
		text = clip(text, maxFallbackText-len(cc)-1) + " " + cc
	}
	return Message{Text: text, Blocks: blocks}
}

// MentionReply is the thread reply that tells the people a message mentions
// when the message itself was updated in place: Slack notifies for a
// mention in a new message, not in an edit. ok is false when the message
// mentions nobody.
func MentionReply(n event.Notification) (m Message, ok bool) {
	cc := mentions(n.Mentions)
	if cc == "" {
		return Message{}, false
	}
	l := lookOf(n.Outcome)
	if n.Change == "fixed" {
		l = look{"✅", "fixed"}
	}
	text := clip(fallback(n, l), maxFallbackText-len(cc)-1) + " " + cc
	return Message{Text: text, Blocks: []Block{{Type: "section", Text: mrkdwn(text)}}}, true
}

// slackUserID is the shape of a Slack user ID. Config validates
// SLACK_MENTIONS already; the check here keeps a tampered ledger row from
// writing <!channel> or any other markup through the mention syntax.
var slackUserID = regexp.MustCompile(`^[UW][A-Z0-9]{2,}$`)

// mentions writes the resolved Slack user IDs as mentions, "cc <@U0123>".
func mentions(ids []string) string {
	var parts []string
	for _, id := range ids {
		if slackUserID.MatchString(id) && len(parts) < maxMentions {
			parts = append(parts, "<@"+id+">")
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "cc " + strings.Join(parts, " ")
}

const maxMentions = 10

// fixedLine says how long a "fixed" subject was broken (NOTIFY_MODE=changes).
func fixedLine(n event.Notification) string {
	if n.Change != "fixed" || n.BrokenRuns <= 0 {
		return ""
	}
	runs := "1 failed run"
	if n.BrokenRuns > 1 {
		runs = strconv.Itoa(n.BrokenRuns) + " failed runs"
	}
	if d := duration(n.BrokenFor); d != "" {
		return "Broken for " + d + " (" + runs + ")"
	}
	return "Broken for " + runs
}

// jobsSection lists a failed run's failed jobs: name (linked), the first
// failed step and how long the job took, one line each.
func jobsSection(n event.Notification, w widths) string {
	if n.Kind != "workflow_run" || len(n.Jobs) == 0 {
		return ""
	}
	lines := []string{"*Failed jobs*"}
	for i, j := range n.Jobs {
		if i == event.MaxJobs {
			break
		}
		name := or(field(j.Name, w.check), "job")
		if u := linkURL(j.URL); u != "" {
			name = "<" + u + "|" + name + ">"
		}
		var step string
		if s := field(j.Step, w.check); s != "" {
			step = "step “" + s + "”"
		}
		lines = append(lines, "• "+join(" · ", name, step, duration(j.Duration)))
	}
	extra := n.MoreJobs + max(len(n.Jobs)-event.MaxJobs, 0)
	if extra > 0 {
		lines = append(lines, "and "+strconv.Itoa(extra)+" more")
	}
	return strings.Join(lines, "\n")
}

// headline says what happened and where, without the emoji:
// "CI failed on main — octo-org/octo-repo run #163".
func headline(n event.Notification, l look, w widths) string {
	title := field(n.Title, w.title)
	if n.Kind == "pull_request" {
		subject := join(" ", number(n.Number), title)
		if subject == "" {
			subject = "Pull request"
		}
		s := subject + " " + l.verb
		if actor := field(n.Actor, w.actor); actor != "" {
			s += " by " + actor
		}
		return s
	}

	var subject, run string
	switch n.Kind {
	case "workflow_run":
		subject = or(title, "Workflow")
		if n.Number > 0 {
			run = "run " + number(n.Number)
		}
	case "check_suite":
		subject = or(join(" ", title, "checks"), "Checks")
	case "check_run":
		subject = join(" ", "Check", title)
	case "status":
		subject = or(title, "Commit status")
	default:
		subject = or(title, "GitHub event")
	}
	s := subject + " " + l.verb
	if branch := field(n.Branch, w.name); branch != "" {
		s += " on " + branch
	}
	if where := join(" ", field(n.Repo, w.name), run); where != "" {
		s += " — " + where
	}
	return s
}

// contextLine is the second line: "who and which commit", then the link.
func contextLine(n event.Notification, w widths) string {
	detail := field(n.Detail, w.detail)
	sha := shortSHA(n.SHA)
	actor := field(n.Actor, w.actor)
	took := duration(n.Duration)

	switch n.Kind {
	case "workflow_run":
		return join(" · ", quote(detail), sha, actor, took, link(n.URL, "View run"))
	case "check_suite":
		return join(" · ", quote(detail), sha, actor, took, link(n.URL, "View checks"))
	case "check_run":
		return join(" · ", detail, sha, actor, took, link(n.URL, "View check"))
	case "pull_request":
		return join(" · ", field(n.Repo, w.name), branches(n, w.name), sha, detail, link(n.URL, "View pull request"))
	case "status":
		return join(" · ", detail, sha, actor, link(n.URL, "View details"))
	default:
		return join(" · ", detail, sha, actor, took, link(n.URL, "View on GitHub"))
	}
}

// fallback is the plain one-liner a phone shows: outcome, subject, repo and
// branch, no formatting and no link.
func fallback(n event.Notification, l look) string {
	w := fallbackWidths
	s := l.emoji + " " + headline(n, l, w)
	if n.Kind == "pull_request" {
		if where := join(" · ", field(n.Repo, w.name), branches(n, w.name)); where != "" {
			s += " — " + where
		}
	}
	return clip(s, maxFallbackText)
}

// branches is "base ← head" for a pull request. The notification's Branch is
// the base branch when Base is not set.
func branches(n event.Notification, width int) string {
	base := field(or(n.Base, n.Branch), width)
	head := field(n.Head, width)
	switch {
	case base != "" && head != "":
		return base + " ← " + head
	case head != "":
		return "← " + head
	}
	return base
}

func countsLine(counts map[event.Outcome]int) string {
	var parts []string
	known := make(map[event.Outcome]bool, len(countOrder))
	for _, c := range countOrder {
		known[c.outcome] = true
		if k := counts[c.outcome]; k > 0 {
			parts = append(parts, strconv.Itoa(k)+" "+c.label)
		}
	}
	var others []string
	for o, k := range counts {
		if !known[o] && k > 0 {
			others = append(others, strconv.Itoa(k)+" "+field(strings.ReplaceAll(string(o), "_", " "), 40))
		}
	}
	// Map order is random; a message must not change between renders.
	slices.Sort(others)
	if len(others) > maxFailedListed {
		others = others[:maxFailedListed]
	}
	return join(" · ", append(parts, others...)...)
}

func failedLine(names []string, width int) string {
	var listed []string
	extra := 0
	for _, name := range names {
		name = field(name, width)
		switch {
		case name == "":
		case len(listed) < maxFailedListed:
			listed = append(listed, name)
		default:
			extra++
		}
	}
	if len(listed) == 0 {
		return ""
	}
	s := "Failed: " + strings.Join(listed, ", ")
	if extra > 0 {
		s += " and " + strconv.Itoa(extra) + " more"
	}
	return s
}

// shortSHA is the 7-character form GitHub shows.
func shortSHA(sha string) string {
	s := sanitize(sha)
	if r := []rune(s); len(r) > 7 {
		s = string(r[:7])
	}
	return field(s, 7)
}

// duration reads like a person would say it: 38s, 4m 12s, 1h 2m.
func duration(d time.Duration) string {
	// Past an hour the seconds are noise, but the minutes should still add up.
	if d >= time.Hour-30*time.Second {
		d = d.Round(time.Minute)
	} else {
		d = d.Round(time.Second)
	}
	if d <= 0 {
		return ""
	}
	h, m, s := int(d/time.Hour), int(d%time.Hour/time.Minute), int(d%time.Minute/time.Second)
	switch {
	case h > 0 && m > 0:
		return strconv.Itoa(h) + "h " + strconv.Itoa(m) + "m"
	case h > 0:
		return strconv.Itoa(h) + "h"
	case m > 0 && s > 0:
		return strconv.Itoa(m) + "m " + strconv.Itoa(s) + "s"
	case m > 0:
		return strconv.Itoa(m) + "m"
	}
	return strconv.Itoa(s) + "s"
}

func number(n int) string {
	if n <= 0 {
		return ""
	}
	return "#" + strconv.Itoa(n)
}

func quote(s string) string {
	if s == "" {
		return ""
	}
	return `"` + s + `"`
}

func or(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// join joins the non-empty parts, so a missing field leaves no dangling
// separator.
func join(sep string, parts ...string) string {
	var kept []string
	for _, p := range parts {
		if p != "" {
			kept = append(kept, p)
		}
	}
	return strings.Join(kept, sep)
}
