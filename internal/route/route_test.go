package route

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ciwebhook/ciwebhook/internal/config"
)

// secret marks every value the tests pass through ${}: no error may show it.
const secret = "SECRETPART"

func envOf(pairs ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(pairs); i += 2 {
		m[pairs[i]] = pairs[i+1]
	}
	return func(k string) string { return m[k] }
}

var testEnv = envOf(
	"API_TEAM_SLACK_URL", "https://hooks.slack.com/services/T0/B0/"+secret,
	"WEB_TEAM_HOOK", "T1/B1/"+secret,
	"PLAIN_HOOK", "http://hooks.slack.com/services/T/B/"+secret,
	"BAD_GLOB", "octo-org/"+secret+"[",
	"UPPER_NAME", "Team-"+secret,
	"BAD_CHANNEL", "#"+secret,
	"BAD_EVENT", secret,
	"NOT_A_URL", secret,
	"CHANNEL", "C0123456789",
	"HOOK_WITH_NEWLINE", "https://hooks.slack.com/services/T/B/X\n",
	"ORG", "octo-org",
)

// parse is Parse on lines joined with newlines, so that a case's line
// numbers can be counted in its source.
func parse(lines ...string) ([]Route, error) {
	return Parse("routes.yaml", []byte(strings.Join(lines, "\n")+"\n"), testEnv)
}

func mustParse(t *testing.T, lines ...string) []Route {
	t.Helper()
	routes, err := parse(lines...)
	if err != nil {
		t.Fatal(err)
	}
	return routes
}

func TestDesignExample(t *testing.T) {
	t.Parallel()
	got, err := Load(filepath.Join("testdata", "design.yaml"), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := []Route{{
		Name:       "api-team",
		Repos:      []string{"octo-org/api-*"},
		Branches:   []string{"main", "release/**"},
		Events:     []string{"workflow_run", "check_suite", "status"},
		Workflows:  []string{".github/workflows/ci.yml"},
		WebhookURL: config.Secret("https://hooks.slack.com/services/T0/B0/" + secret),
		Line:       2,
	}, {
		Name:     "platform-live",
		Repos:    []string{"octo-org/*"},
		Channel:  "C0123456789",
		Continue: true,
		Line:     8,
	}}
	if !reflect.DeepEqual(got, want) {
		// %+v prints secrets as [redacted]; compare them apart.
		t.Errorf("got  %+v\nwant %+v", got, want)
		for i := range min(len(got), len(want)) {
			if got[i].WebhookURL != want[i].WebhookURL {
				t.Errorf("route %d: WebhookURL differs", i)
			}
		}
	}
}

func TestTeamsSample(t *testing.T) {
	t.Parallel()
	got, err := Load(filepath.Join("testdata", "teams.yaml"), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := []Route{{
		Name:       "web.frontend",
		Repos:      []string{"octo-org/web-*", "octo-org/site"}, // lowercased
		Branches:   []string{"main", "release/*", "1.10"},       // 1.10 as written, not a float
		Workflows:  []string{"Build & test", "ci.yml"},
		WebhookURL: config.Secret("https://hooks.slack.com/services/T1/B1/" + secret),
		Continue:   true,
		Line:       4,
	}, {
		Name:    "web_deploys",
		Repos:   []string{"octo-org/web-*", "octo-org/site"}, // through the alias
		Events:  []string{"deployment_status"},
		Channel: "G0ABCDEF12",
		Line:    13,
	}, {
		Name:       "local-relay",
		Events:     []string{"status", "check_run"},
		WebhookURL: config.Secret("http://127.0.0.1:9000/hook"),
		Line:       19,
	}, {
		Name:    "everything-else",
		Channel: "C0123456789",
		Line:    24,
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), testEnv)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("err = %v; want a not-exist error naming the file", err)
	}
}

// Values that are valid but easy to get wrong.
func TestParseValues(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		value string // a channel or webhook_url line
		check func(Route) bool
	}{
		{"$$ is not special", `    channel: "$${CHANNEL}"`, nil}, // a bad channel: tested below
		{"http to localhost", `    webhook_url: http://localhost:8080/hook`,
			func(r Route) bool { return r.WebhookURL == "http://localhost:8080/hook" }},
		{"http to IPv6 loopback", `    webhook_url: http://[::1]/hook`,
			func(r Route) bool { return r.WebhookURL == "http://[::1]/hook" }},
		{"a newline from the environment is trimmed", `    webhook_url: ${HOOK_WITH_NEWLINE}`,
			func(r Route) bool { return r.WebhookURL == "https://hooks.slack.com/services/T/B/X" }},
		{"channel from the environment", `    channel: ${CHANNEL}`,
			func(r Route) bool { return r.Channel == "C0123456789" }},
		{"a lone $ is kept", `    webhook_url: https://example.com/$x/$/${ORG}`,
			func(r Route) bool { return r.WebhookURL == "https://example.com/$x/$/octo-org" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			routes, err := parse("routes:", "  - name: a", tc.value)
			if tc.check == nil {
				// "$${CHANNEL}" is "$" then the channel: not an ID, and the
				// message shows the value as written.
				var e *Error
				if !errors.As(err, &e) || !strings.Contains(e.Reason, `"$${CHANNEL}"`) {
					t.Fatalf("err = %v; want a bad channel quoted as written", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(routes[0]) {
				t.Errorf("got %+v (secrets redacted)", routes[0])
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	const head = "routes:\n  - name: a\n    channel: C0123456789" // lines 1-3
	cases := []struct {
		name    string
		yaml    string
		line    int
		mention string // the reason must contain it
	}{
		{"not YAML", head + "\n    repos: [a,", 4, "YAML"},
		{"tab indentation", "routes:\n\t- name: a", 2, "YAML"},
		{"second document", head + "\n---\nroutes: []", 4, "second YAML document"},
		{"empty file", "", 1, "routes is missing"},
		{"only comments", "# routes: later", 1, "routes is missing"},
		{"top level is a list", "- name: a", 1, "mapping with a routes key"},
		{"no routes key", "# x\nroutez:\n  - name: a", 2, `unknown key "routez"`},
		{"unknown top-level key", head + "\ndefaults:\n  channel: C0123456789", 4, `unknown key "defaults"`},
		{"routes null", "routes:", 1, "routes is empty; unset CONFIG_FILE instead"},
		{"routes empty", "\nroutes: []", 2, "routes is empty; unset CONFIG_FILE instead"},
		{"routes a string", "routes: api-team", 1, "routes must be a list"},
		{"route a string", "routes:\n  - api-team", 2, "route 1 must be a mapping"},
		{"unknown route key", head + "\n    repo: [octo-org/api]", 4, `unknown key "repo"`},
		{"key twice", head + "\n    repos: [a/b]\n    repos: [c/d]", 5, "repos is given twice (first at line 4)"},
		{"merge key", "base: &b {channel: C0123456789}\nroutes:\n  - name: a\n    <<: *b", 1, `unknown key "base"`},
		{"merge key in a route", "routes:\n  - &b {name: a, channel: C0123456789}\n  - name: b\n    <<: *b", 4, "merge keys"},
		{"repos a string", head + "\n    repos: octo-org/*", 4, "repos must be a list of strings"},
		{"branches a mapping", head + "\n    branches:\n      main: true", 5, "branches must be a list of strings"},
		{"workflows item a list", head + "\n    workflows:\n      - [ci.yml]", 5, "workflows must be a list of strings"},
		{"events item null", head + "\n    events: [status, ~]", 4, "events must be a list of strings"},
		{"repos empty", head + "\n    repos: []", 4, "repos is empty; leave it out to match any repository"},
		{"branches null", head + "\n    branches:", 4, "branches is empty; leave it out to match any branch"},
		{"workflows empty", head + "\n    workflows: []", 4, "workflows is empty; leave it out to match any workflow"},
		{"events empty", head + "\n    events: []", 4, "events is empty; leave it out to match any event"},
		{"empty item", head + "\n    branches: [main, '']", 4, "branches: item 2 is empty"},
		{"bad repo glob", head + "\n    repos: ['octo-org/[api']", 4, `"octo-org/[api" is not a valid glob`},
		{"bad branch glob", head + "\n    branches:\n      - main\n      - release/{a,b", 6, `branches: "release/{a,b" is not a valid glob`},
		{"bad workflow glob", head + "\n    workflows: ['ci\\']", 4, "workflows"},
		{"bad glob from the environment", head + "\n    repos: ['${BAD_GLOB}']", 4, `"${BAD_GLOB}" (after ${} expansion) is not a valid glob`},
		{"event in capitals", head + "\n    events: [Workflow_Run]", 4, `events: "Workflow_Run" is not an event name`},
		{"event with a dash", head + "\n    events: [workflow-run]", 4, "events"},
		{"event from the environment", head + "\n    events: ['${BAD_EVENT}']", 4, "events"},
		{"continue a string", head + "\n    continue: 'true'", 4, "continue must be true or false"},
		{"continue yes", head + "\n    continue: yes", 4, "continue must be true or false"},
		{"continue tagged yes", head + "\n    continue: !!bool yes", 4, "continue must be true or false"},
		{"continue a number", head + "\n    continue: 1", 4, "continue must be true or false"},
		{"no name", "routes:\n  - channel: C0123456789", 2, "no name"},
		{"name empty", "routes:\n  - name:\n    channel: C0123456789", 2, "name is empty"},
		{"name a list", "routes:\n  - name: [a]\n    channel: C0123456789", 2, "name must be a string"},
		{"name in capitals", "routes:\n  - name: API\n    channel: C0123456789", 2, `name "API" is not valid`},
		{"name with a space", "routes:\n  - name: api team\n    channel: C0123456789", 2, "name"},
		{"name too long", "routes:\n  - name: " + strings.Repeat("a", 65) + "\n    channel: C0123456789", 2, "at most 64"},
		{"name from the environment", "routes:\n  - name: ${UPPER_NAME}\n    channel: C0123456789", 2, `name "${UPPER_NAME}" (after ${} expansion) is not valid`},
		{"name twice", head + "\n  - name: b\n    channel: C0123456789\n  - name: a\n    channel: C0123456789", 6, `name "a" is already used by the route at line 2`},
		{"no destination", head + "\n  - name: b\n    repos: [a/b]", 4, `route "b" has no destination; give it webhook_url or channel`},
		{"two destinations", head + "\n    webhook_url: ${API_TEAM_SLACK_URL}", 4, `route "a" has both webhook_url and channel`},
		{"webhook over http", "routes:\n  - name: a\n    webhook_url: ${PLAIN_HOOK}", 3, "webhook_url must be an https URL"},
		{"webhook over http, literal", "routes:\n  - name: a\n    webhook_url: http://hooks.slack.com/services/T/B/" + secret, 3, "webhook_url must be an https URL"},
		{"webhook not a URL", "routes:\n  - name: a\n    webhook_url: ${NOT_A_URL}", 3, "webhook_url is not a URL"},
		{"webhook a list", "routes:\n  - name: a\n    webhook_url: [https://x]", 3, "webhook_url must be a string"},
		{"channel name", "routes:\n  - name: a\n    channel: '#ci'", 3, `channel "#ci" is not a Slack channel ID`},
		{"channel name unquoted", "routes:\n  - name: a\n    channel: #ci", 3, "an unquoted # starts a YAML comment"},
		{"channel in lowercase", "routes:\n  - name: a\n    channel: c0123456789", 3, "channel's details in Slack"},
		{"channel too short", "routes:\n  - name: a\n    channel: C0123", 3, "not a Slack channel ID"},
		{"channel from the environment", "routes:\n  - name: a\n    channel: ${BAD_CHANNEL}", 3, `channel "${BAD_CHANNEL}" (after ${} expansion)`},
		{"unset variable", "routes:\n  - name: a\n    webhook_url: ${MISSING_URL}", 3, "environment variable MISSING_URL is unset or empty"},
		{"unset variable in a list", head + "\n    repos:\n      - ${ORG}/api\n      - ${OTHER_ORG}/*", 6, "OTHER_ORG"},
		{"unclosed ${", "routes:\n  - name: a\n    webhook_url: ${API_TEAM_SLACK_URL", 3, "webhook_url has a ${ without a closing }"},
		{"bad variable name", "routes:\n  - name: a\n    webhook_url: https://x/${1X}", 3, "${1X} is not a variable name"},
		{"empty variable name", "routes:\n  - name: a\n    webhook_url: https://x/${}", 3, "${} is not a variable name"},
		{"unknown anchor", head + "\n    repos: *nope", 0, "unknown anchor"},
		{"alias to itself", "routes: &r\n  - *r", 2, "route 1 must be a mapping"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			routes, err := Parse("routes.yaml", []byte(tc.yaml), testEnv)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("got %+v, %v; want an *Error", routes, err)
			}
			if e.File != "routes.yaml" || e.Line != tc.line || !strings.Contains(e.Reason, tc.mention) {
				t.Errorf("got %q; want routes.yaml:%d: ...%s...", err, tc.line, tc.mention)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error shows a secret: %s", err)
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		e    Error
		want string
	}{
		{Error{"routes.yaml", 7, "why"}, "routes.yaml:7: why"},
		{Error{"routes.yaml", 0, "why"}, "routes.yaml: why"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

// names lists the routes Match returned, by name.
func names(rs []*Route) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}

func TestMatch(t *testing.T) {
	t.Parallel()
	// Two routes that take everything, for the ordering cases.
	firstStops := []string{
		"routes:",
		"  - name: first",
		"    channel: C0000000001",
		"  - name: second",
		"    channel: C0000000002",
	}
	chain := []string{
		"routes:",
		"  - name: live",
		"    repos: [octo-org/*]",
		"    channel: C0000000001",
		"    continue: true",
		"  - name: statuses-only", // skipped, but does not end the chain
		"    events: [status]",
		"    channel: C0000000002",
		"    continue: true",
		"  - name: team",
		"    channel: C0000000003",
		"  - name: never", // after a match without continue
		"    channel: C0000000004",
	}
	filters := []string{
		"routes:",
		"  - name: api",
		"    repos: [Octo-Org/API-*]", // lowercased at load
		"    channel: C0000000001",
		"  - name: releases",
		"    branches: [main, release/**]",
		"    channel: C0000000002",
		"  - name: ci",
		"    workflows: [CI, .github/workflows/build.yml, deploy.yml]",
		"    channel: C0000000003",
		"  - name: events",
		"    events: [deployment_status]",
		"    channel: C0000000004",
		"  - name: rest",
		"    channel: C0000000005",
	}
	cases := []struct {
		name   string
		routes []string
		s      Subject
		want   []string
	}{
		{"first match stops", firstStops, Subject{Event: "push", Repo: "a/b"}, []string{"first"}},
		{"absent lists match an empty subject", firstStops, Subject{}, []string{"first"}},
		{"continue chains, skipping a route that does not match, up to a stop", chain,
			Subject{Event: "workflow_run", Repo: "octo-org/api"}, []string{"live", "team"}},
		{"every route of a chain that matches", chain,
			Subject{Event: "status", Repo: "octo-org/api"}, []string{"live", "statuses-only", "team"}},
		{"a chain that starts later", chain,
			Subject{Event: "status", Repo: "other/api"}, []string{"statuses-only", "team"}},
		{"repos ignore case", filters, Subject{Repo: "OCTO-ORG/api-Server"}, []string{"api"}},
		{"repos glob stops at /", filters, Subject{Repo: "octo-org/api-x/y", Event: "push"}, []string{"rest"}},
		{"branch exact", filters, Subject{Repo: "o/r", Branches: []string{"main"}}, []string{"releases"}},
		{"release/** spans segments", filters, Subject{Repo: "o/r", Branches: []string{"release/1.2/hotfix"}}, []string{"releases"}},
		{"release/** matches release itself", filters, Subject{Repo: "o/r", Branches: []string{"release"}}, []string{"releases"}},
		{"releases/1 is another branch", filters, Subject{Repo: "o/r", Branches: []string{"releases/1"}}, []string{"rest"}},
		{"branches are case-sensitive", filters, Subject{Repo: "o/r", Branches: []string{"Main"}}, []string{"rest"}},
		{"a status matches by any of its branches", filters,
			Subject{Event: "status", Repo: "o/r", Branches: []string{"feature/x", "main"}}, []string{"releases"}},
		{"no branch does not match a route with branches", filters,
			Subject{Event: "status", Repo: "o/r", Workflow: "lint"}, []string{"rest"}},
		{"workflow by name", filters, Subject{Repo: "o/r", Workflow: "CI"}, []string{"ci"}},
		{"workflow by path", filters,
			Subject{Repo: "o/r", Workflow: "Build", WorkflowPath: ".github/workflows/build.yml"}, []string{"ci"}},
		{"workflow by base name", filters,
			Subject{Repo: "o/r", Workflow: "Deploy", WorkflowPath: ".github/workflows/deploy.yml"}, []string{"ci"}},
		{"workflow names are case-sensitive", filters, Subject{Repo: "o/r", Workflow: "ci"}, []string{"rest"}},
		{"pull_request has no workflow", filters, Subject{Event: "pull_request", Repo: "o/r"}, []string{"rest"}},
		{"events are exact", filters, Subject{Event: "deployment_status", Repo: "o/r"}, []string{"events"}},
		{"events are exact, not globs", filters, Subject{Event: "deployment", Repo: "o/r"}, []string{"rest"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			routes := mustParse(t, tc.routes...)
			if got := names(Match(routes, tc.s)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMatchNone(t *testing.T) {
	t.Parallel()
	routes := mustParse(t,
		"routes:",
		"  - name: api",
		"    repos: [octo-org/api]",
		"    channel: C0000000001",
		"  - name: team",
		"    repos: [octo-org/*]",
		"    branches: [main]",
		"    channel: C0000000002",
	)
	if got := Match(routes, Subject{Repo: "octo-org/web", Branches: []string{"dev"}}); got != nil {
		t.Errorf("got %v, want nil", names(got))
	}
	if got := Match(nil, Subject{Repo: "octo-org/api"}); got != nil {
		t.Errorf("no routes: got %v, want nil", names(got))
	}
}

// Match runs for every delivery: nothing matching must cost no allocation,
// mixed-case repositories included. Not parallel: AllocsPerRun counts the
// whole process's allocations.
func TestMatchDoesNotAllocate(t *testing.T) {
	routes, err := Load(filepath.Join("testdata", "teams.yaml"), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	routes = routes[:2] // leave out the catch-all routes
	for _, s := range []Subject{
		{Event: "workflow_run", Repo: "octo-org/api", Branches: []string{"main"}, Workflow: "CI", WorkflowPath: ".github/workflows/ci.yml"},
		{Event: "status", Repo: "Octo-Org/Some-Long-Repository-Name-Past-32-Bytes", Branches: []string{"a", "b"}},
	} {
		var got []*Route
		if n := testing.AllocsPerRun(100, func() { got = Match(routes, s) }); n != 0 || got != nil {
			t.Errorf("%+v: %v allocations, matched %v; want 0 and none", s, n, names(got))
		}
	}
}

func TestLowerASCII(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("A", 300)
	for in, want := range map[string]string{
		"":                 "",
		"octo-org/api":     "octo-org/api",
		"Octo-Org/API_1.x": "octo-org/api_1.x",
		"Été/Repo":         "été/repo", // not ASCII: strings.ToLower
		long:               strings.Repeat("a", 300),
	} {
		var buf [256]byte
		if got := lowerASCII(&buf, in); got != want {
			t.Errorf("lowerASCII(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParse: CONFIG_FILE is written by hand and may come from anywhere in a
// deployment; Parse must never panic, must fail only with an *Error, must
// never show a value given through ${}, and what it accepts must hold the
// rules that Match and the callers rely on.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("routes:\n  - name: a\n    channel: ${X}\n    repos: [\"${X}/*\"]\n"))
	f.Add([]byte("routes: &r\n  - *r\n"))
	f.Add([]byte("routes:\n  - &b {name: a, webhook_url: 'https://x/${Y'}\n  - <<: *b\n"))
	const fuzzSecret = "FUZZSECRET"
	getenv := func(name string) string {
		if name == "EMPTY" {
			return ""
		}
		return "https://hooks.slack.com/" + fuzzSecret + "/" + name
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		routes, err := Parse("fuzz.yaml", data, getenv)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("not an *Error: %v", err)
			}
			if strings.Contains(err.Error(), fuzzSecret) && !strings.Contains(string(data), fuzzSecret) {
				t.Fatalf("an expanded value shows: %s", err)
			}
			return
		}
		if len(routes) == 0 {
			t.Fatal("no routes and no error")
		}
		seen := map[string]bool{}
		for _, r := range routes {
			if !routeName.MatchString(r.Name) || seen[r.Name] {
				t.Fatalf("bad or repeated name %q", r.Name)
			}
			seen[r.Name] = true
			if (r.WebhookURL == "") == (r.Channel == "") {
				t.Fatalf("route %q: not exactly one destination", r.Name)
			}
			for _, l := range [][]string{r.Repos, r.Branches, r.Events, r.Workflows} {
				if l != nil && len(l) == 0 {
					t.Fatalf("route %q: an empty list", r.Name)
				}
			}
			if r.Line < 1 {
				t.Fatalf("route %q: line %d", r.Name, r.Line)
			}
		}
		Match(routes, Subject{Event: "status", Repo: "Octo-Org/API", Branches: []string{"main"}, Workflow: "CI", WorkflowPath: ".github/workflows/ci.yml"})
	})
}
