package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load(envOf("GITHUB_WEBHOOK_SECRET", "x"))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Enabled: true, Secrets: []Secret{"x"}, SlackMaxAttempts: 3, SlackRetryBase: time.Second,
		SlackRate: 1, SlackBurst: 5, LedgerBackend: "sqlite", LedgerPath: "data/ledger.db",
		LedgerLimit: 1000, MaxBodyBytes: 2097152, Addr: ":8080", LogLevel: slog.LevelInfo, LogFormat: "json", NotifyMode: "all",
		SlackAPIURL: "https://slack.com/api",
	}
	if fmt.Sprintf("%#v", c) != fmt.Sprintf("%#v", want) || c.Secrets[0].Reveal() != "x" {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}

	c, err = Load(envOf("GITHUB_WEBHOOK_SECRET", "x", "LEDGER_BACKEND", "file", "PORT", "9000"))
	if err != nil || c.LedgerPath != "data/ledger.jsonl" || c.Addr != ":9000" {
		t.Errorf("file backend on PORT 9000: %+v, %v", c, err)
	}
}

func TestEveryVariable(t *testing.T) {
	t.Parallel()
	c, err := Load(envOf(
		"GITHUB_WEBHOOK_SECRET", "cur", "GITHUB_WEBHOOK_SECRET_PREVIOUS", "prev",
		"SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/X",
		"ALLOWED_REPOS", "Octo-Org/*, me/Repo,", "ALLOWED_BRANCHES", "main,release/*,feature/**",
		"IGNORE_ACTORS", "*[bot]", "ALLOWED_WORKFLOWS", ".github/workflows/ci.yml", "IGNORED_WORKFLOWS", "nightly*",
		"LEDGER_BACKEND", "SQLite", "LEDGER_PATH", "/tmp/x.db", "LEDGER_LIMIT", "50", "MAX_BODY_BYTES", "1024",
		"SLACK_MAX_ATTEMPTS", "5", "SLACK_RETRY_BASE", "250ms", "SLACK_RATE", "0.5", "NOTIFY_PENDING", "true",
		"ADDR", "127.0.0.1:7000", "LOG_LEVEL", "debug", "LOG_FORMAT", "text", "NOTIFY_MODE", "all",
		"SLACK_API_URL", "https://slack.example/api/", "SLACK_BOT_TOKEN", " xoxb-1-2-abc ", "CONFIG_FILE", "routes.yaml",
	))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"secrets", len(c.Secrets), 2},
		{"previous", c.Secrets[1].Reveal(), "prev"},
		{"repos", c.AllowedRepos, []string{"octo-org/*", "me/repo"}},
		{"branches", c.AllowedBranches, []string{"main", "release/*", "feature/**"}},
		{"actors", c.IgnoreActors, []string{"*[bot]"}},
		{"backend", c.LedgerBackend, "sqlite"},
		{"limit", c.LedgerLimit, 50},
		{"body", c.MaxBodyBytes, int64(1024)},
		{"attempts", c.SlackMaxAttempts, 5},
		{"base", c.SlackRetryBase, 250 * time.Millisecond},
		{"rate", c.SlackRate, 0.5},
		{"pending", c.NotifyPending, true},
		{"api", c.SlackAPIURL, "https://slack.example/api"},
		{"token", c.SlackBotToken.Reveal(), "xoxb-1-2-abc"},
		{"config file", c.ConfigFile, "routes.yaml"},
		{"addr", c.Addr, "127.0.0.1:7000"},
		{"level", c.LogLevel, slog.LevelDebug},
		{"format", c.LogFormat, "text"},
	}
	for _, ch := range checks {
		if fmt.Sprint(ch.got) != fmt.Sprint(ch.want) {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestBadValuesNameTheirVariable(t *testing.T) {
	t.Parallel()
	secretFile := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(secretFile, []byte("\n"), 0o600)
	cases := []struct {
		name    string
		env     []string
		varName string
	}{
		{"no secret", nil, "GITHUB_WEBHOOK_SECRET"},
		{"empty secret", []string{"GITHUB_WEBHOOK_SECRET", ""}, "GITHUB_WEBHOOK_SECRET"},
		{"blank secret", []string{"GITHUB_WEBHOOK_SECRET", "   "}, "GITHUB_WEBHOOK_SECRET"},
		{"both secrets", []string{"GITHUB_WEBHOOK_SECRET", "a", "GITHUB_WEBHOOK_SECRET_FILE", secretFile}, "GITHUB_WEBHOOK_SECRET"},
		{"missing secret file", []string{"GITHUB_WEBHOOK_SECRET_FILE", "/nonexistent/secret"}, "GITHUB_WEBHOOK_SECRET_FILE"},
		{"empty secret file", []string{"GITHUB_WEBHOOK_SECRET_FILE", secretFile}, "GITHUB_WEBHOOK_SECRET_FILE"},
		{"unknown backend", []string{"LEDGER_BACKEND", "mysql"}, "LEDGER_BACKEND"},
		{"negative limit", []string{"LEDGER_LIMIT", "-3"}, "LEDGER_LIMIT"},
		{"zero limit", []string{"LEDGER_LIMIT", "0"}, "LEDGER_LIMIT"},
		{"limit not a number", []string{"LEDGER_LIMIT", "lots"}, "LEDGER_LIMIT"},
		{"body limit", []string{"MAX_BODY_BYTES", "2MB"}, "MAX_BODY_BYTES"},
		{"attempts", []string{"SLACK_MAX_ATTEMPTS", "0"}, "SLACK_MAX_ATTEMPTS"},
		{"retry base", []string{"SLACK_RETRY_BASE", "1"}, "SLACK_RETRY_BASE"},
		{"negative retry base", []string{"SLACK_RETRY_BASE", "-1s"}, "SLACK_RETRY_BASE"},
		{"rate", []string{"SLACK_RATE", "0"}, "SLACK_RATE"},
		{"rate NaN", []string{"SLACK_RATE", "NaN"}, "SLACK_RATE"},
		{"enable", []string{"ENABLE_WEBHOOKS", "maybe"}, "ENABLE_WEBHOOKS"},
		{"pending", []string{"NOTIFY_PENDING", "yes please"}, "NOTIFY_PENDING"},
		{"port", []string{"PORT", "http"}, "PORT"},
		{"port range", []string{"PORT", "70000"}, "PORT"},
		{"addr", []string{"ADDR", "8080"}, "ADDR"},
		{"log level", []string{"LOG_LEVEL", "loud"}, "LOG_LEVEL"},
		{"log format", []string{"LOG_FORMAT", "xml"}, "LOG_FORMAT"},
		{"malformed branch glob", []string{"ALLOWED_BRANCHES", "release/[abc"}, "ALLOWED_BRANCHES"},
		{"malformed actor glob", []string{"IGNORE_ACTORS", "bot{a,b"}, "IGNORE_ACTORS"},
		{"repo without owner", []string{"ALLOWED_REPOS", "repo"}, "ALLOWED_REPOS"},
		{"repo glob in owner", []string{"ALLOWED_REPOS", "*/repo"}, "ALLOWED_REPOS"},
		{"slack over http", []string{"SLACK_WEBHOOK_URL", "http://hooks.slack.com/services/T/B/SECRETPART"}, "SLACK_WEBHOOK_URL"},
		{"slack not a URL", []string{"SLACK_WEBHOOK_URL", "hooks.slack.com/services/T/B/SECRETPART"}, "SLACK_WEBHOOK_URL"},
		{"slack API", []string{"SLACK_API_URL", "ftp://x"}, "SLACK_API_URL"},
		{"postgres without a database", []string{"LEDGER_BACKEND", "postgres"}, "DATABASE_URL"},
		{"unknown mode", []string{"NOTIFY_MODE", "failures"}, "NOTIFY_MODE"},
		{"slack API over http", []string{"SLACK_API_URL", "http://slack.example/api"}, "SLACK_API_URL"},
		{"bot token of another kind", []string{"SLACK_BOT_TOKEN", "SECRETPART"}, "SLACK_BOT_TOKEN"},
		{"bot token with a space", []string{"SLACK_BOT_TOKEN", "xoxb-SECRETPART xoxb-2"}, "SLACK_BOT_TOKEN"},
		{"mention ID too short", []string{"SLACK_MENTIONS", "a=U1"}, "SLACK_MENTIONS"},
		{"mention ID lowercase", []string{"SLACK_MENTIONS", "octocat=u0123"}, "SLACK_MENTIONS"},
		{"mention is a channel", []string{"SLACK_MENTIONS", "octocat=C0123"}, "SLACK_MENTIONS"},
		{"mention special", []string{"SLACK_MENTIONS", "octocat=<!channel>"}, "SLACK_MENTIONS"},
		{"mention without =", []string{"SLACK_MENTIONS", "octocat"}, "SLACK_MENTIONS"},
		{"mention bad login", []string{"SLACK_MENTIONS", "octo cat=U0123"}, "SLACK_MENTIONS"},
		{"mention twice", []string{"SLACK_MENTIONS", "octocat=U0123,OctoCat=U0456"}, "SLACK_MENTIONS"},
		{"mention file missing", []string{"SLACK_MENTIONS", "@/nonexistent/mentions"}, "SLACK_MENTIONS"},
		{"unclosed quote", []string{"IGNORED_WORKFLOWS", `"Build, test,deploy`}, "IGNORED_WORKFLOWS"},
		{"bare quote", []string{"ALLOWED_WORKFLOWS", `Build "fast"`}, "ALLOWED_WORKFLOWS"},
		{"two lines", []string{"IGNORE_ACTORS", "a\nb"}, "IGNORE_ACTORS"},
		{"space after a closing quote", []string{"IGNORED_WORKFLOWS", `"a, b" ,c`}, "IGNORED_WORKFLOWS"},
		{"source not a CIDR", []string{"ALLOWED_SOURCE_CIDRS", "192.30.252.0/22,github"}, "ALLOWED_SOURCE_CIDRS"},
		{"source prefix too long", []string{"ALLOWED_SOURCE_CIDRS", "10.0.0.0/33"}, "ALLOWED_SOURCE_CIDRS"},
		{"source IPv6 prefix too long", []string{"ALLOWED_SOURCE_CIDRS", "2001:db8::/129"}, "ALLOWED_SOURCE_CIDRS"},
		{"source with a port", []string{"ALLOWED_SOURCE_CIDRS", "10.0.0.1:443"}, "ALLOWED_SOURCE_CIDRS"},
		{"source with a zone", []string{"ALLOWED_SOURCE_CIDRS", "fe80::1%eth0"}, "ALLOWED_SOURCE_CIDRS"},
		{"source IPv4-mapped", []string{"ALLOWED_SOURCE_CIDRS", "::ffff:10.0.0.1"}, "ALLOWED_SOURCE_CIDRS"},
		{"proxy not an address", []string{"ALLOWED_SOURCE_CIDRS", "10.0.0.0/8", "TRUSTED_PROXIES", "10.0.0.300"}, "TRUSTED_PROXIES"},
		{"proxies without an allowlist", []string{"TRUSTED_PROXIES", "10.0.0.1"}, "TRUSTED_PROXIES"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := tc.env
			if tc.varName != "GITHUB_WEBHOOK_SECRET" && tc.varName != "GITHUB_WEBHOOK_SECRET_FILE" {
				env = append([]string{"GITHUB_WEBHOOK_SECRET", "SECRETPART-hmac"}, env...)
			}
			_, err := Load(envOf(env...))
			var ce *Error
			if !errors.As(err, &ce) || ce.Var != tc.varName {
				t.Fatalf("got %v, want an error naming %s", err, tc.varName)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, tc.varName+": ") || strings.Contains(msg, "\n") {
				t.Errorf("%q: want one line starting with the variable", msg)
			}
			if strings.Contains(msg, "SECRETPART") {
				t.Errorf("%q shows a secret", msg)
			}
		})
	}
}

func TestSourcePrefixes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name             string
		sources, proxies string
		wantSources      []string
		wantProxies      []string
	}{
		{"unset: any source", "", "", nil, nil},
		{"CIDRs and single addresses, both families", " 192.30.252.0/22, 140.82.112.5 ,2606:50c0::/32,2001:db8::1,", "",
			[]string{"192.30.252.0/22", "140.82.112.5/32", "2606:50c0::/32", "2001:db8::1/128"}, nil},
		{"host bits are masked off", "10.1.2.3/8", "", []string{"10.0.0.0/8"}, nil},
		{"proxies too", "192.30.252.0/22", "10.0.0.0/8, 169.254.1.1", []string{"192.30.252.0/22"}, []string{"10.0.0.0/8", "169.254.1.1/32"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(envOf("GITHUB_WEBHOOK_SECRET", "x", "ALLOWED_SOURCE_CIDRS", tc.sources, "TRUSTED_PROXIES", tc.proxies))
			if err != nil {
				t.Fatal(err)
			}
			show := func(ps []netip.Prefix) []string {
				var out []string
				for _, p := range ps {
					out = append(out, p.String())
				}
				return out
			}
			if got := show(c.AllowedSources); fmt.Sprint(got) != fmt.Sprint(tc.wantSources) {
				t.Errorf("AllowedSources = %v, want %v", got, tc.wantSources)
			}
			if got := show(c.TrustedProxies); fmt.Sprint(got) != fmt.Sprint(tc.wantProxies) {
				t.Errorf("TrustedProxies = %v, want %v", got, tc.wantProxies)
			}
		})
	}
}

func TestLoopbackSlackOverHTTP(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"http://127.0.0.1:9/hook", "http://localhost/x", "http://[::1]:80/x"} {
		if _, err := Load(envOf("GITHUB_WEBHOOK_SECRET", "x", "SLACK_WEBHOOK_URL", u)); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
}

func TestSecretFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte("from-a-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(envOf("GITHUB_WEBHOOK_SECRET_FILE", path))
	if err != nil || len(c.Secrets) != 1 || c.Secrets[0].Reveal() != "from-a-file" {
		t.Fatalf("got %v, %v; want the file's secret without its newline", c.Secrets, err)
	}
}

func TestDisabledNeedsNoSecret(t *testing.T) {
	t.Parallel()
	c, err := Load(envOf("ENABLE_WEBHOOKS", "false"))
	if err != nil || c.Enabled || c.Secrets != nil {
		t.Fatalf("disabled: %+v, %v", c, err)
	}
}

// Secrets never print, whichever way a Config is shown.
func TestSecretsNeverPrint(t *testing.T) {
	t.Parallel()
	c, err := Load(envOf("GITHUB_WEBHOOK_SECRET", "hmac-SECRETPART",
		"SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/SECRETPART"))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(c)
	var buf strings.Builder
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", c, "url", c.SlackWebhookURL)
	for _, out := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), string(js), buf.String()} {
		if strings.Contains(out, "SECRETPART") {
			t.Errorf("a secret printed: %s", out)
		}
	}
}

// Workflow names may hold commas, spaces and emoji: such items are written
// in double quotes, CSV-style; unquoted lists read as they always did.
func TestQuotedLists(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   string
		want []string
	}{
		{`"Build, test",deploy`, []string{"Build, test", "deploy"}},
		{` ci.yml , "🚀 Release *",, `, []string{"ci.yml", "🚀 Release *"}},
		{`"say ""hi""",x`, []string{`say "hi"`, "x"}},
		{`dependabot[bot],*[bot]`, []string{"dependabot[bot]", "*[bot]"}},
		{`Nightly build`, []string{"Nightly build"}},
		{``, nil},
	}
	for _, tc := range cases {
		c, err := Load(envOf("GITHUB_WEBHOOK_SECRET", "x", "IGNORED_WORKFLOWS", tc.in, "ALLOWED_WORKFLOWS", tc.in, "IGNORE_ACTORS", tc.in))
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if fmt.Sprint(c.IgnoredWorkflows) != fmt.Sprint(tc.want) || len(c.IgnoredWorkflows) != len(tc.want) ||
			fmt.Sprint(c.AllowedWorkflows) != fmt.Sprint(tc.want) || fmt.Sprint(c.IgnoreActors) != fmt.Sprint(tc.want) {
			t.Errorf("%q: got %q, want %q", tc.in, c.IgnoredWorkflows, tc.want)
		}
	}
}

func TestMentions(t *testing.T) {
	t.Parallel()
	c, err := Load(envOf("GITHUB_WEBHOOK_SECRET", "x", "SLACK_MENTIONS", " OctoCat=U0123, hubot=W0456 ,dependabot[bot]=U0789"))
	want := map[string]string{"octocat": "U0123", "hubot": "W0456", "dependabot[bot]": "U0789"}
	if err != nil || fmt.Sprint(c.SlackMentions) != fmt.Sprint(want) {
		t.Fatalf("got %v (%v), want %v", c.SlackMentions, err, want)
	}

	file := filepath.Join(t.TempDir(), "mentions")
	body := "# team CI\noctocat=U0123   # lead\n\n  hubot = W0456\n"
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = Load(envOf("GITHUB_WEBHOOK_SECRET", "x", "SLACK_MENTIONS", "@"+file))
	if err != nil || fmt.Sprint(c.SlackMentions) != fmt.Sprint(map[string]string{"octocat": "U0123", "hubot": "W0456"}) {
		t.Fatalf("from file: got %v (%v)", c.SlackMentions, err)
	}

	if err := os.WriteFile(file, []byte("octocat=U0123\nhubot=nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(envOf("GITHUB_WEBHOOK_SECRET", "x", "SLACK_MENTIONS", "@"+file))
	if err == nil || !strings.Contains(err.Error(), "SLACK_MENTIONS") || !strings.Contains(err.Error(), file+":2") {
		t.Errorf("a bad line is named by variable, file and line: %v", err)
	}
}
